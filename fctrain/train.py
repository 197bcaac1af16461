"""`fc train`: LoRA fine-tuning of the RGBA CLIP on region shards.

Single process, or one process per GPU under `torchrun` (DDP; gloo on CPU). Rank 0 writes
RUN/config.toml (the resolved config), RUN/metrics.jsonl and the checkpoints (fctrain.checkpoint).
An optimiser step whose loss is non-finite in any of its micro-batches is skipped by a gradient
scaler (dynamic for fp16, fixed at 1 otherwise, so fused AdamW skips on the device) and counted
once, as one step; the count is read, with the other metrics, once per `log_every` steps, so no
step waits on the device for it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import signal
import time
import threading
from collections import Counter
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol

import torch
import torch.distributed as dist

from fcdata import guard, keys
from fcdata.errors import CountingHandler, Interrupted, UserError
from fcdata.loader import LoaderPosition, Prefetcher, RegionStream, count_samples, make_loader, resolve_shards
from fcdata.outputs import write_text_atomically
from fcdata.relation_views import NEGATIVE_TEXTS
from fctrain.checkpoint import (
    CheckpointManager,
    RankPositions,
    RngState,
    TrainedWeights,
    TrainState,
    find_checkpoint,
    read_state,
)
from fctrain.config import OptimConfig, TrainConfig, to_toml
from fctrain.loss import HardNegatives, region_contrastive_loss
from fctrain.model import RGBAClip, build_model, trainable_summary
from fctrain.text_cache import TextEmbeddingCache, encode_right_padded
from fctrain.pretrain import PretrainOptions, pretrain_tiny_clip
from fctrain.rundir import CONFIG_FILE, TINY_MODEL, check_checkpoint_config, prepare_run_dir


class TrainProgress(Protocol):
    def note(self, message: str) -> None: ...
    def start(self, total_steps: int, first_step: int) -> None: ...
    def update(self, metrics: dict) -> None: ...  # every log_every steps, the row written to metrics.jsonl


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world: int = 1
    amp_dtype: torch.dtype | None = None  # autocast dtype; None = fp32
    control_group: object = None  # a CPU (gloo) process group for flags; None: the default group

    @property
    def main(self) -> bool:
        return self.rank == 0


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    checkpoint: Path | None
    metrics: dict  # the last logged row
    stopped_by: int | None = None  # the signal that stopped the run before run.steps, if one did
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)  # this rank's skipped samples, by reason


def setup_runtime(config: TrainConfig) -> Runtime:
    """Device, process group (under torchrun) and autocast dtype."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    wanted = config.run.device
    if wanted == "auto":
        wanted = "cuda" if torch.cuda.is_available() else "cpu"
    if wanted.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"run.device = {config.run.device!r} but CUDA is not available")
    if world > 1 and not config.data.resample:
        # Exactly-once streams end after different numbers of batches on different ranks, and a
        # rank that runs out would leave the others waiting in a collective.
        raise UserError("data.resample = false needs a single process; under torchrun keep the endless stream")
    control_group = None
    if world > 1:
        backend = "nccl" if wanted.startswith("cuda") else "gloo"
        dist.init_process_group(backend)
        if backend == "nccl":  # flags go through a CPU group: no device sync for them
            control_group = dist.new_group(backend="gloo")
        if wanted == "cuda":
            wanted = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    device = torch.device(wanted)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    amp = config.optim.amp
    if amp == "auto":
        amp = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if device.type == "cuda" else "fp32"
    if amp == "fp16" and device.type != "cuda":
        raise UserError("optim.amp = fp16 needs a CUDA device; use bf16 or fp32 on CPU")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[amp]
    return Runtime(device=device, rank=rank, world=world, amp_dtype=dtype, control_group=control_group)


def build_optimizer(model: RGBAClip, optim: OptimConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters: LoRA (weight decay), the mask module (the alpha conv or
    object_guided's paths; alpha_lr_multiplier times the learning rate, no decay: it starts at or
    ends in zero and decay would pull it back) and the logit scale if it trains."""
    alpha = [p for p in model.mask_module.parameters() if p.requires_grad]
    alpha_ids = {id(p) for p in alpha}
    scale = [model.logit_scale] if model.logit_scale.requires_grad else []
    lora = [p for p in model.parameters() if p.requires_grad and id(p) not in alpha_ids and p is not model.logit_scale]
    groups = [
        {"params": lora, "lr": optim.lr, "weight_decay": optim.weight_decay, "name": "lora"},
        {"params": alpha, "lr": optim.lr * optim.alpha_lr_multiplier, "weight_decay": 0.0, "name": "alpha"},
    ]
    if scale:
        groups.append({"params": scale, "lr": optim.lr, "weight_decay": 0.0, "name": "logit_scale"})
    fused = device.type == "cuda"
    return torch.optim.AdamW(groups, betas=optim.betas, eps=optim.eps, fused=fused)


def lr_lambda(optim: OptimConfig, total_steps: int):
    """Linear warm-up, then cosine decay to min_lr_ratio of each group's peak."""

    def factor(step: int) -> float:
        if step < optim.warmup_steps:
            return (step + 1) / optim.warmup_steps
        progress = (step - optim.warmup_steps) / max(1, total_steps - optim.warmup_steps)
        return optim.min_lr_ratio + (1 - optim.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def make_scaler(runtime: Runtime) -> torch.amp.GradScaler:
    """fp16: a dynamic loss scaler. Otherwise a scaler that starts at 1 and never grows, whose
    only job is to skip steps with non-finite gradients (on the device when the optimiser is
    fused); its halving after a skipped step is harmless in bf16/fp32."""
    if runtime.amp_dtype == torch.float16:
        return torch.amp.GradScaler(runtime.device.type)
    return torch.amp.GradScaler(runtime.device.type, init_scale=1.0, growth_interval=2**31 - 1)


def train_phrases(shards: list[str], limit: int = 200_000) -> list[str]:
    """Captions of the training shards: the tiny model's tokenizer is built from them."""
    phrases: list[str] = []
    handler = CountingHandler("reading captions")
    for captions in guard.decoded(guard.read_raw(shards, handler), _phrases_of, handler):
        phrases += captions
        if len(phrases) >= limit:
            return phrases
    guard.require_any(len(phrases), handler, "training shards")
    return phrases


def _phrases_of(sample: dict) -> list[str]:
    phrases = json.loads(sample[keys.META])["regions"]["phrase"]
    if not all(isinstance(p, str) for p in phrases):
        raise ValueError("phrases must be strings")
    return phrases


def train(config: TrainConfig, progress: TrainProgress | None = None, overwrite: bool = False) -> TrainResult:
    """Train as `config` says. `overwrite`: the run folder may hold another run, whose files
    (fctrain.rundir.RUN_OUTPUTS) are deleted first. Everything that can be checked without
    building the model is checked first."""
    with _signals_interrupt():
        return _train(config, progress, overwrite)


def _train(config: TrainConfig, progress: TrainProgress | None, overwrite: bool) -> TrainResult:
    import transformers

    transformers.utils.logging.disable_progress_bar()  # ours is the progress display
    run_dir = Path(config.run.out_dir)
    shards = resolve_shards(config.data.shards, config.data.split)
    guard.check_shards(shards, "training shards")
    _check_workers(config.data.workers)
    resume_from = None
    if config.checkpoint.resume:  # checked now, before any work: restored once the states exist
        resume_from = find_checkpoint(run_dir, config.checkpoint.resume)
        check_checkpoint_config(resume_from, read_state(resume_from)["config"], config)
    runtime = setup_runtime(config)
    if runtime.main:
        prepare_run_dir(run_dir, config, overwrite)
        write_text_atomically(run_dir / CONFIG_FILE, to_toml(config))
    tiny_dir = run_dir / TINY_MODEL
    if config.model.name_or_path == "tiny" and runtime.main and not (tiny_dir / "config.json").exists():
        if progress:
            whole = config.model.tiny_pretrain_full_images
            progress.note(
                f"creating the tiny model: {config.model.tiny_pretrain_steps} steps of CLIP pretraining on region crops"
                + (f" and {whole:.0%} of the images whole" if whole else "")
            )
        pretrain = functools.partial(
            pretrain_tiny_clip, shards=shards,
            options=PretrainOptions(
                steps=config.model.tiny_pretrain_steps, seed=config.run.seed, full_image_ratio=config.model.tiny_pretrain_full_images,
            ),
        )
        build_model(config.model, config.lora, tiny_dir, train_phrases(shards), config.run.seed, pretrain=pretrain)
    _barrier(runtime)
    model, tokenizer = build_model(config.model, config.lora, tiny_dir, seed=config.run.seed)
    if config.loss.logit_scale:
        model.logit_scale.data.fill_(math.log(config.loss.logit_scale))
    model.logit_scale.requires_grad_(config.loss.learn_logit_scale)
    model.to(runtime.device)
    if progress and runtime.main:
        progress.note(trainable_summary(model))
    optimizer = build_optimizer(model, config.optim, runtime.device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config.optim, config.run.steps))
    scaler = make_scaler(runtime)
    roles = max(1, config.data.workers)
    state = TrainState(position=LoaderPosition(emitted=[0] * roles))
    states = {
        "model": TrainedWeights(model), "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler,
        "train": state, "data": RankPositions(state.position, runtime.rank, runtime.world), "rng": RngState(),
    }
    checkpoints = CheckpointManager(run_dir, states, config.checkpoint.keep_last, config, main=runtime.main)
    if resume_from is not None:
        checkpoints.restore(resume_from)
        if progress and runtime.main:
            progress.note(f"resumed from {resume_from} at step {state.step}")
    trained = torch.nn.parallel.DistributedDataParallel(model) if runtime.world > 1 else model
    parts = _Parts(model, trained, tokenizer, optimizer, scheduler, scaler, state)
    loop = _Loop(config, runtime, parts, checkpoints, shards, progress)
    try:
        return loop.run()
    finally:
        if runtime.world > 1:
            dist.destroy_process_group()


@dataclass
class _Parts:
    """What a training step works with (the stateful ones are also the checkpoint's states)."""

    model: RGBAClip
    trained: torch.nn.Module  # the model, or its DDP wrapper: what the forward pass calls
    tokenizer: object
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    state: TrainState


def _caption_tokens(batch, negatives: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(input ids, attention mask) of a batch's captions, with its negative captions after them
    where asked (the loader tokenises both to the same padded length)."""
    if not negatives:
        return batch.input_ids, batch.attention_mask
    return (
        torch.cat([batch.input_ids, batch.negative_input_ids]),
        torch.cat([batch.attention_mask, batch.negative_attention_mask]),
    )


class _Loop:
    """The training loop and the few things it keeps between steps."""

    def __init__(self, config: TrainConfig, runtime: Runtime, parts: _Parts, checkpoints: CheckpointManager,
                 shards: list[str], progress: TrainProgress | None):
        self.config, self.runtime, self.checkpoints, self.shards, self.progress = config, runtime, checkpoints, shards, progress
        self.model, self.trained, self.tokenizer, self.state = parts.model, parts.trained, parts.tokenizer, parts.state
        self.optimizer, self.scheduler, self.scaler = parts.optimizer, parts.scheduler, parts.scaler
        self.run_dir = Path(config.run.out_dir)
        # Cached embeddings are the frozen text tower's: a tower that trains (lora.text_targets) is run every step.
        self.text_trains = bool(config.lora.text_targets)
        cached = config.model.text_cache and not self.text_trains
        self.text_cache = TextEmbeddingCache(config.model.text_cache_entries) if cached else None
        images = count_samples(shards)
        per_step = config.data.images_per_batch * runtime.world * config.optim.grad_accum
        self.batches_per_epoch = max(1, math.ceil(images / per_step)) * config.optim.grad_accum
        self.stop_signal: int | None = None  # a signal this process caught
        self.stopping = 0  # the signal some rank caught (0: none): every rank leaves after the same step
        self.last_checkpoint: Path | None = None
        self.metrics: dict = {}
        self.skipped: Counter[str] = Counter()  # over the logged windows of this process

    def run(self) -> TrainResult:
        config, state = self.config, self.state
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        if self.progress and self.runtime.main:
            self.progress.start(config.run.steps, state.step)
        window = _Window(self.runtime.device)
        try:
            while state.step < config.run.steps and not self.stopping:
                prefetcher = Prefetcher(make_loader(self._stream()), self.runtime.device)
                window.prefetcher = prefetcher
                micro = 0
                for batch in prefetcher:
                    loss = self._forward_backward(batch, sync=(micro + 1) % config.optim.grad_accum == 0)
                    window.add(loss, len(batch) * self.runtime.world, batch.source.skipped)
                    state.position.advance(batch.source)
                    micro += 1
                    if micro % config.optim.grad_accum:
                        continue
                    self._optimizer_step()
                    window.end_step()
                    if state.step % config.run.log_every == 0 or state.step == config.run.steps:
                        self._log(window)
                    if config.run.val_every and state.step % config.run.val_every == 0:
                        self._validate()
                    if state.step % config.checkpoint.every_steps == 0:
                        self._checkpoint()
                    if state.step >= config.run.steps or self._stop_requested():
                        break
                    if state.position.batches >= self.batches_per_epoch:
                        state.position.next_epoch(len(state.position.emitted))
                        break
                else:  # an exactly-once stream ran out before batches_per_epoch (skips, few regions)
                    if state.position.batches == 0:
                        why = prefetcher.problems[0] if prefetcher.problems else "no sample had a usable region"
                        raise UserError(f"the training shards gave no batch in a whole epoch: {why}")
                    state.position.next_epoch(len(state.position.emitted))
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if self.checkpoints.saved_step != state.step:
            self._checkpoint()
        stopped = self.stopping if self.stopping and state.step < config.run.steps else None
        return TrainResult(self.run_dir, state.step, self.last_checkpoint, self.metrics, stopped, dict(sorted(self.skipped.items())))

    def _stream(self) -> RegionStream:
        return RegionStream(
            self.shards, self.config.data, self.tokenizer, self.config.model.image_size,
            rank=self.runtime.rank, world=self.runtime.world, position=self.state.position,
        )

    def _text_features(self, batch, negatives: bool = False) -> torch.Tensor:
        """The batch's captions (B x D), followed by its negative captions where asked (B + N rows)."""
        if self.text_cache is not None:  # the cache keys on the host's token ids
            return self.text_cache.embed_tokens(*_caption_tokens(batch.source, negatives), self.model, self.runtime.device)
        input_ids, attention_mask = _caption_tokens(batch, negatives)
        with nullcontext() if self.text_trains else torch.no_grad():
            if self.tokenizer.padding_side == "right":  # the mask-free path: no device sync (fctrain.model)
                return encode_right_padded(self.model, input_ids)
            return self.model.encode_text(input_ids, attention_mask)

    def _forward_backward(self, batch, sync: bool) -> torch.Tensor:
        runtime = self.runtime
        no_sync = self.trained.no_sync() if runtime.world > 1 and not sync else nullcontext()
        autocast = torch.autocast(runtime.device.type, dtype=runtime.amp_dtype, enabled=runtime.amp_dtype is not None)
        relations = self.config.data.relation_ratio > 0  # every rank alike: the loss gathers the extras
        with no_sync:
            with autocast:
                if relations:  # the swapped views in the same forward pass
                    image_features = self.trained(
                        torch.cat([batch.pixel_values, batch.negative_pixel_values]), torch.cat([batch.alpha, batch.negative_alpha])
                    )
                else:
                    image_features = self.trained(batch.pixel_values, batch.alpha)
                text_features = self._text_features(batch, negatives=relations)
            views, hard = len(batch), None
            if relations:
                hard = HardNegatives(
                    image_features[views:], batch.negative_alpha_slot, batch.negative_alpha_keys,
                    text_features[views:], batch.negative_text_slot, batch.negative_text_keys, 1, NEGATIVE_TEXTS,
                )
            loss = region_contrastive_loss(
                image_features[:views], text_features[:views], batch.phrase_keys, self.model.logit_scale.exp(),
                label_smoothing=self.config.loss.label_smoothing, hard=hard,
            )
            # x world: DDP averages gradients over ranks, each of which holds the global loss's
            # exact gradient for its own features (fctrain.loss).
            self.scaler.scale(loss * runtime.world / self.config.optim.grad_accum).backward()
        return loss.detach()

    def _optimizer_step(self) -> None:
        config = self.config
        self.scaler.unscale_(self.optimizer)
        if config.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]], config.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if config.loss.learn_logit_scale:
            with torch.no_grad():
                self.model.logit_scale.clamp_(0, math.log(config.loss.max_logit_scale))
        self.state.step += 1
        self.state.samples_seen += config.data.batch_size * self.runtime.world * config.optim.grad_accum

    def _log(self, window: "_Window") -> None:
        row = window.flush(self.state, self.optimizer)  # the one device sync of the window
        self.state.nonfinite_steps += row.pop("nonfinite_now")
        row["nonfinite_steps"] = self.state.nonfinite_steps
        self.metrics = row
        self.skipped.update(row["skipped_samples"])
        if self.runtime.main:
            with open(self.run_dir / "metrics.jsonl", "a") as log:
                log.write(json.dumps(row) + "\n")
            if self.progress:
                self.progress.update(row)
        if self.state.nonfinite_steps > self.config.run.max_nonfinite:
            raise UserError(
                f"stopping: {self.state.nonfinite_steps} steps had a non-finite loss (run.max_nonfinite = "
                f"{self.config.run.max_nonfinite}); lower optim.lr or use optim.amp = bf16/fp32"
            )

    @torch.no_grad()
    def _validate(self) -> None:
        config = self.config
        spec = config.run.val_shards or str(Path(self.shards[0]).parent)
        try:
            shards = resolve_shards(spec, "val")
        except UserError:
            return  # no val split: nothing to validate on
        options = dataclasses.replace(config.data, resample=False, train_augment=False, workers=0, shards=spec)
        stream = RegionStream(shards, options, self.tokenizer, config.model.image_size, self.runtime.rank, self.runtime.world)
        self.model.eval()
        total = torch.zeros(2, device=self.runtime.device)
        for index, batch in enumerate(Prefetcher(make_loader(stream), self.runtime.device)):
            if index == config.run.val_batches:
                break
            with torch.autocast(self.runtime.device.type, dtype=self.runtime.amp_dtype, enabled=self.runtime.amp_dtype is not None):
                image_features = self.model(batch.pixel_values, batch.alpha)
                text_features = self._text_features(batch)
            # Per rank: the last batches of an exactly-once pass differ in size (and number) between ranks.
            loss = region_contrastive_loss(
                image_features, text_features, batch.phrase_keys, self.model.logit_scale.exp(), across_ranks=False
            )
            total += torch.stack([loss.float() * len(batch), torch.tensor(float(len(batch)), device=total.device)])
        self.model.train()
        if self.runtime.world > 1:
            dist.all_reduce(total)
        if total[1] > 0:
            row = {"step": self.state.step, "val_loss": round(float(total[0] / total[1]), 5), "val_views": int(total[1])}
            self.metrics.update(row)
            if self.runtime.main:
                with open(self.run_dir / "metrics.jsonl", "a") as log:
                    log.write(json.dumps(row) + "\n")
                if self.progress:
                    self.progress.update(row)

    def _checkpoint(self) -> None:
        self.last_checkpoint = self.checkpoints.save(self.state.step)  # every rank: the data positions are gathered
        _barrier(self.runtime)

    def _stop_requested(self) -> bool:
        """Whether any rank caught SIGINT/SIGTERM. Ranks must agree: one that left the loop a step
        early would wait in its final checkpoint while the others wait in the next step's gather.
        They agree on the signal too, so every rank reports it (and exits with its code)."""
        caught = self.stop_signal or 0
        if self.runtime.world > 1:
            flag = torch.tensor([caught])
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.runtime.control_group)
            caught = int(flag.item())
        self.stopping = caught
        return bool(caught)

    def _on_signal(self, number, frame) -> None:
        if self.stop_signal is not None:
            raise Interrupted(number)  # a second signal: stop now, without a checkpoint
        self.stop_signal = number
        if self.progress and self.runtime.main:
            self.progress.note(f"signal {signal.Signals(number).name}: saving a checkpoint after this step")


class _Window:
    """What happens between two log lines, kept on the device until the log step reads it."""

    def __init__(self, device: torch.device):
        self.device = device
        self.prefetcher: Prefetcher | None = None
        self.reset()

    def reset(self) -> None:
        self.loss_sum = torch.zeros((), device=self.device)
        self.finite_batches = torch.zeros((), device=self.device)  # micro-batches with a finite loss
        self.step_nonfinite = torch.zeros((), device=self.device, dtype=torch.bool)  # the open step has one
        self.nonfinite_steps = torch.zeros((), device=self.device)  # optimiser steps skipped in the window
        self.views = 0
        self.skipped: dict[str, int] = {}
        self.started = time.perf_counter()
        self.wait_at_start = self.prefetcher.wait_seconds if self.prefetcher else 0.0

    def add(self, loss: torch.Tensor, views: int, skipped: dict[str, int]) -> None:
        finite = torch.isfinite(loss)
        self.loss_sum += torch.where(finite, loss, torch.zeros_like(loss))
        self.finite_batches += finite
        self.step_nonfinite |= ~finite
        self.views += views
        for key, count in skipped.items():
            self.skipped[key] = self.skipped.get(key, 0) + count

    def end_step(self) -> None:
        """The optimiser step just taken: the scaler skipped it if a micro-batch's loss was non-finite."""
        self.nonfinite_steps += self.step_nonfinite
        self.step_nonfinite.zero_()

    def flush(self, state: TrainState, optimizer) -> dict:
        elapsed = time.perf_counter() - self.started
        waited = (self.prefetcher.wait_seconds if self.prefetcher else 0.0) - self.wait_at_start
        loss_sum, finite_batches, nonfinite = torch.stack([self.loss_sum, self.finite_batches, self.nonfinite_steps]).tolist()
        row = {
            "step": state.step,
            "loss": round(loss_sum / max(1.0, finite_batches), 5),
            "lr": {group["name"]: group["lr"] for group in optimizer.param_groups},
            "samples_per_s": round(self.views / elapsed, 1) if elapsed > 0 else None,
            "data_wait_fraction": round(max(0.0, waited) / elapsed, 3) if elapsed > 0 else None,
            "samples_seen": state.samples_seen,
            "epoch": state.position.epoch,
            "skipped_samples": dict(self.skipped),
            "nonfinite_now": int(nonfinite),
        }
        if self.device.type == "cuda":
            row["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(self.device) / 2**30, 2)
        self.reset()
        return row


def _check_workers(workers: int) -> None:
    cores = len(os.sched_getaffinity(0))
    if workers > 4 * cores:
        raise UserError(
            f"data.workers = {workers} is more than 4 per core ({cores} cores available to this process); "
            "each worker is a process holding a shuffle buffer: use at most the number of cores"
        )


@contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGINT and SIGTERM raise Interrupted while the run is being set up, so that cleanup code
    runs (the temporaries of a half-built tiny model are removed); the loop installs its own
    handlers (a checkpoint after the current step) once training starts."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _interrupt(number, frame) -> None:
    raise Interrupted(number)


def _barrier(runtime: Runtime) -> None:
    if runtime.world > 1:
        dist.barrier()
