"""The CUDA-only paths of training (marked gpu: `pytest -m gpu` on a GPU machine, skipped without
CUDA). Where a test's body means something on CPU too it is parametrised over the device, and its
CPU variant runs everywhere: it proves the test's logic, so the CUDA variant is not first run on a
GPU machine that is lent for minutes (benchmarks/gpu_check.sh runs them there)."""

from __future__ import annotations

import inspect
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fctrain import train as train_module
from fctrain.checkpoint import STATE_FILE
from fctrain.config import LoraConfig, OptimConfig, load_config
from fctrain.train import _Loop, train

HAS_CUDA = torch.cuda.is_available()
gpu_only = [pytest.mark.gpu, pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")]
CUDA = pytest.param("cuda", marks=gpu_only)
DEVICES = ["cpu", CUDA]
# Whole training runs: on CPU (2 cores, tens of seconds) they belong to the slow tier.
DEVICES_TRAINING = [pytest.param("cpu", marks=pytest.mark.slow), CUDA]


@pytest.fixture(scope="module")
def shard_dir(make_shards):
    return make_shards(images=40, seed=2, shard_samples=16, val_fraction=0.1)


def config_for(shard_dir, out_dir, device: str, *overrides):
    """A few steps of the tiny model at 32 px: seconds on CPU."""
    base = [
        f'data.shards="{shard_dir}"', f'run.out_dir="{out_dir}"', f'run.device="{device}"', "data.batch_size=16",
        "data.workers=0", "data.shuffle_buffer=20", "model.image_size=32", "model.tiny_pretrain_steps=5",
        "run.log_every=1", "run.val_every=0", "optim.warmup_steps=2", "optim.lr=2e-3", "run.steps=4",
        "checkpoint.every_steps=4",
    ]
    return load_config(None, base + list(overrides))


def tiny_lora_model(device: str, image_size: int = 32):
    """A small random RGBA CLIP with LoRA on `device` (no tokenizer: tests feed token ids)."""
    from transformers import CLIPConfig, CLIPModel

    from fctrain.model import RGBAClip, apply_lora

    torch.manual_seed(0)
    config = CLIPConfig(
        vision_config=dict(image_size=image_size, patch_size=16, hidden_size=64, intermediate_size=128,
                           num_hidden_layers=2, num_attention_heads=2),
        text_config=dict(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=16, eos_token_id=99),
        projection_dim=32,
    )
    model = apply_lora(RGBAClip(CLIPModel(config)), LoraConfig(rank=4))
    with torch.no_grad():  # a non-zero alpha conv, so the alpha path is exercised too
        model.alpha_embedding.weight.normal_(0, 0.02)
    return model.to(device).train()


def inputs(device: str, batch: int = 4, size: int = 32):
    generator = torch.Generator().manual_seed(1)
    pixels = torch.randn(batch, 3, size, size, generator=generator).to(device)
    alpha = torch.randn(batch, 1, size, size, generator=generator).to(device)
    return pixels, alpha


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float().flatten(), b.detach().float().flatten()
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """|a - b| / |b| (Frobenius): a difference relative to the magnitude of what is compared."""
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


# ------------------------------------------------------------------------------------- precision


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_autocast_runs_the_vision_tower_in_bf16_with_fp32_weights(device):
    """Under bf16 autocast the features come out in bf16 close to fp32's, and the trainable
    weights keep fp32 gradients (what the optimiser steps)."""
    model = tiny_lora_model(device)
    pixels, alpha = inputs(device)
    with torch.no_grad():
        reference = model(pixels, alpha)
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
        features = model(pixels, alpha)
    assert reference.dtype == torch.float32 and features.dtype == torch.bfloat16
    assert cosine(features, reference) > 0.995  # bf16 keeps ~3 significant digits per product
    features.float().square().sum().backward()
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    assert lora and all(p.grad is not None and p.grad.dtype == torch.float32 for p in lora)
    assert all(torch.isfinite(p.grad).all() for p in lora)


@pytest.mark.parametrize("device", DEVICES)
def test_zero_alpha_conv_equals_clip_under_bf16_autocast(device):
    """At initialisation the RGBA model is CLIP, also under bf16 autocast (same kernels, same rounding)."""
    from transformers import CLIPConfig, CLIPModel

    from fctrain.model import RGBAClip

    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(vision_config={"image_size": 64, "patch_size": 16, "hidden_size": 64, "intermediate_size": 128,
                                               "num_hidden_layers": 2, "num_attention_heads": 2}, projection_dim=32))
    clip = clip.to(device).eval()
    model = RGBAClip(clip)
    pixels, alpha = inputs(device, batch=2, size=64)
    with torch.no_grad(), torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
        ours = model.encode_image(pixels, alpha)
        plain = clip.visual_projection(clip.vision_model(pixel_values=pixels).pooler_output)
    assert cosine(ours, plain) > 1 - 1e-4


@pytest.mark.parametrize(("device", "amp"), [pytest.param("cpu", "bf16", marks=pytest.mark.slow), pytest.param("cuda", "fp16", marks=gpu_only)])
def test_a_planted_overflow_step_is_skipped_by_the_scaler_and_counted(shard_dir, tmp_path, monkeypatch, device, amp):
    """An overflowing loss at step 2 is counted (nonfinite_steps), the scaler skips that optimiser
    step (AdamW takes one step fewer; on CUDA fused AdamW skips it on the device) and halves its
    scale. fp16 runs the dynamic scaler; the CPU variant proves the logic with the fixed scaler."""
    real, calls = train_module.region_contrastive_loss, {"n": 0}

    def overflow_once(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("inf") if calls["n"] == 2 else loss

    monkeypatch.setattr(train_module, "region_contrastive_loss", overflow_once)
    result = train(config_for(shard_dir, tmp_path / "run", device, f'optim.amp="{amp}"'))
    state = torch.load(result.checkpoint / STATE_FILE, weights_only=False)
    assert result.step == 4 and result.metrics["nonfinite_steps"] == 1
    initial = 65536.0 if amp == "fp16" else 1.0  # torch's default, and make_scaler's fixed scale
    skipped = math.log2(initial / state["scaler"]["scale"])  # each skip halves it; no growth in 4 steps
    # fp16 may also overflow on its own at the start (the scale starts high): those are skipped too.
    assert skipped >= 1 and skipped == int(skipped)
    adam_steps = {float(s["step"]) for s in state["optimizer"]["state"].values()}
    assert adam_steps == {4 - skipped}
    assert all(math.isfinite(v) for v in _logged_losses(result.run_dir).values())


@pytest.mark.parametrize("device", DEVICES)
def test_fused_adamw_steps_like_the_reference_implementation(device):
    """The trainer's AdamW is fused on CUDA (not on CPU), and a fused step moves the weights as the
    for-loop implementation does (relative to the size of the update)."""
    from fctrain.train import build_optimizer

    model = tiny_lora_model(device)
    built = build_optimizer(model, OptimConfig(), torch.device(device))
    assert built.defaults["fused"] == (device == "cuda")
    start = [p.detach().clone() for g in built.param_groups for p in g["params"]]
    moved = {}
    for fused in (True, False):
        params = [p.detach().clone().requires_grad_(True) for p in start]
        groups, index = [], 0
        for group in built.param_groups:
            count = len(group["params"])
            # Only the hyperparameters: a group's own "fused"/"foreach" would override the constructor's.
            settings = {k: group[k] for k in ("lr", "weight_decay", "betas", "eps")}
            groups.append({**settings, "params": params[index : index + count]})
            index += count
        optimizer = torch.optim.AdamW(groups, fused=fused, foreach=None if fused else False)
        assert optimizer.param_groups[0]["fused"] == fused
        generator = torch.Generator().manual_seed(3)
        for _ in range(3):
            for p in params:
                p.grad = torch.randn(p.shape, generator=generator).to(device)
            optimizer.step()
        moved[fused] = params
    for fused, reference, origin in zip(moved[True], moved[False], start):
        assert relative_error(fused - origin, reference - origin) < 1e-4


# ------------------------------------------------------------------------------------- data


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_prefetcher_side_stream_gives_the_cpu_result(shard_dir):
    """The CUDA prefetcher (pinned host batch, copy and normalisation on a side stream) gives the
    batch the CPU path gives."""
    from fcdata.loader import Prefetcher, RegionStream, make_loader, resolve_shards
    from fcdata.options import LoaderOptions
    from fctrain.tokenizer import build_tokenizer

    shards = resolve_shards(str(shard_dir))
    tokenizer = build_tokenizer(["a red circle", "a blue square"], Path(shards[0]).parent / "tok")
    options = LoaderOptions(batch_size=8, workers=0, shuffle_buffer=4)

    def batches(device: str, count: int = 3):
        prefetcher = Prefetcher(make_loader(RegionStream(shards, options, tokenizer, 64)), torch.device(device))
        return [batch for batch, _ in zip(prefetcher, range(count))]

    for on_cpu, on_gpu in zip(batches("cpu"), batches("cuda"), strict=True):
        assert on_gpu.pixel_values.is_cuda and on_gpu.source.images.is_pinned()
        # Same arithmetic on both devices: equal to float32 rounding (assert_close's default, relative).
        torch.testing.assert_close(on_gpu.pixel_values.cpu(), on_cpu.pixel_values)
        torch.testing.assert_close(on_gpu.alpha.cpu(), on_cpu.alpha)
        for name in ("input_ids", "attention_mask", "phrase_keys", "image_ids", "region_ids"):
            assert torch.equal(getattr(on_gpu, name).cpu(), getattr(on_cpu, name))


@pytest.mark.parametrize("device", DEVICES)
def test_text_cache_serves_rows_from_the_device_without_syncing(device):
    """Cached caption embeddings equal the text tower's, live on the device, and lookups (hits and
    new captions alike) never make the host wait for the device."""
    from fctrain.text_cache import TextEmbeddingCache

    model = tiny_lora_model(device).eval()
    ids = torch.tensor([[5, 6, 99, 0], [7, 99, 0, 0], [5, 6, 99, 0], [8, 9, 10, 99]])
    mask = (torch.arange(4) <= (ids == 99).int().argmax(1, keepdim=True)).long()
    with torch.no_grad():
        direct = model.encode_text(ids.to(device), mask.to(device))
    cache = TextEmbeddingCache(max_entries=3)
    first = cache.embed_tokens(ids, mask, model, device)  # fills the table: not under the guard
    more = torch.tensor([[11, 99], [7, 99]])
    with SyncGuard(device) as guard:
        guard.active = True
        hit = cache.embed_tokens(ids[:2], mask[:2], model, device)
        mixed = cache.embed_tokens(more, torch.ones_like(more), model, device)  # a miss evicts
    assert first.device.type == torch.device(device).type and (cache.misses, len(cache)) == (4, 3)
    for row, expected in zip(first, direct):
        assert cosine(row, expected) > 1 - 1e-5
    assert torch.equal(hit, first[:2]) and torch.equal(mixed[1], first[1])


# ------------------------------------------------------------------------------------- compile, DDP


@pytest.mark.parametrize("device", DEVICES)
def test_compiled_vision_forward_matches_eager(device):
    """torch.compile of the vision forward (inductor on CUDA; aot_eager on CPU, which traces the
    same graph without generating code) gives eager's features and LoRA gradients."""
    from fctrain.model import compile_vision

    model = tiny_lora_model(device)
    pixels, alpha = inputs(device)

    def run():
        model.zero_grad(set_to_none=True)
        features = model(pixels, alpha)
        features.square().sum().backward()
        return features.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    # Plain fp32 matmuls for both: the trainer turns TF32 on process-wide, and TF32's own rounding
    # differs between eager's kernels and inductor's by more than the tolerances below.
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        eager, eager_grads = run()
        torch._dynamo.reset()
        assert compile_vision(model, backend="inductor" if device == "cuda" else "aot_eager", fullgraph=False)
        compiled, compiled_grads = run()
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    assert cosine(compiled, eager) > 1 - 1e-5 and relative_error(compiled, eager) < 1e-3  # fused kernels round differently
    assert compiled_grads.keys() == eager_grads.keys() and any("lora_" in n for n in eager_grads)
    for name, grad in eager_grads.items():
        assert relative_error(compiled_grads[name], grad) < 1e-3, name


@pytest.mark.parametrize("device", DEVICES)
def test_ddp_initialises_and_trains_a_step_on_one_process(tmp_path, device):
    """The process group the trainer uses under torchrun (NCCL on CUDA, gloo on CPU, plus the gloo
    group for flags) comes up on one process, and a DDP-wrapped step gives the gradient of the
    unwrapped model. (Two-rank semantics are tested with gloo in tests/fctrain/test_train.py.)"""
    import torch.distributed as dist

    from fctrain.loss import region_contrastive_loss

    backend = "nccl" if device == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        flags = dist.new_group(backend="gloo")
        model, plain = tiny_lora_model(device), tiny_lora_model(device)
        wrapped = torch.nn.parallel.DistributedDataParallel(model, device_ids=[0] if device == "cuda" else None)
        pixels, alpha = inputs(device, batch=6)
        texts = torch.randn(6, 32, generator=torch.Generator().manual_seed(2)).to(device)
        keys = torch.arange(6, device=device)
        for net in (wrapped, plain):
            region_contrastive_loss(net(pixels, alpha), texts, keys, torch.tensor(100.0, device=device)).backward()
        for (name, a), (_, b) in zip(model.named_parameters(), plain.named_parameters()):
            if b.grad is not None:
                assert relative_error(a.grad, b.grad) < 1e-5, name
        total = torch.ones(3, device=device)
        dist.all_reduce(total)
        flag = torch.tensor([1])
        dist.all_reduce(flag, group=flags)
        assert total.tolist() == [1.0, 1.0, 1.0] and flag.item() == 1
        assert dist.get_backend() == backend
    finally:
        dist.destroy_process_group()


# ------------------------------------------------------------------------------------- the loop


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_resume_on_cuda_continues_with_the_same_losses(shard_dir, tmp_path, monkeypatch):
    """bf16 on CUDA: resuming from the step-3 checkpoint reproduces steps 4-6 of the uninterrupted
    run (deterministic kernels, strict: an op without one fails the test by name rather than
    adding noise; a wrong data position, RNG or optimiser state moves the loss far more)."""
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    settings = ['optim.amp="bf16"', "model.text_cache=false", "run.steps=6", "checkpoint.every_steps=3"]
    torch.use_deterministic_algorithms(True)
    try:
        whole = train(config_for(shard_dir, tmp_path / "whole", "cuda", *settings))
        resumed_dir = tmp_path / "resumed"
        shutil.copytree(whole.run_dir, resumed_dir)
        shutil.rmtree(resumed_dir / "checkpoints" / "step-0000006")
        (resumed_dir / "metrics.jsonl").unlink()
        train(config_for(shard_dir, resumed_dir, "cuda", *settings, 'checkpoint.resume="latest"'))
    finally:
        torch.use_deterministic_algorithms(False)
    reference, again = _logged_losses(whole.run_dir), _logged_losses(resumed_dir)
    assert sorted(again) == [4, 5, 6]
    for step in (4, 5, 6):
        assert again[step] == pytest.approx(reference[step], rel=1e-5)


class SyncGuard:
    """Fails any host-device synchronisation while `active` is set. On CUDA that is
    torch.cuda.set_sync_debug_mode("error"). On CPU nothing synchronises, so the guard refuses the
    operations that would on a GPU: reading a tensor's value on the host (item, bool, float) and
    data-dependent output shapes; the CPU variants of the tests that use it prove their harness."""

    SYNCING_OPS = ("aten._local_scalar_dense", "aten.nonzero", "aten.masked_select", "aten._unique2",
                   "aten.unique_consecutive", "aten.unique_dim", "aten.repeat_interleave.Tensor")

    def __init__(self, device: str):
        self.cuda = torch.device(device).type == "cuda"
        self._active = False
        self._mode = None if self.cuda else _RefuseSyncingOps(self)

    @property
    def active(self) -> bool:
        return self._active

    @active.setter
    def active(self, on: bool) -> None:
        self._active = on
        if self.cuda:
            torch.cuda.set_sync_debug_mode("error" if on else "default")

    def __enter__(self) -> "SyncGuard":
        if self._mode is not None:
            self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.active = False
        if self._mode is not None:
            self._mode.__exit__(*exc)


class _RefuseSyncingOps(TorchDispatchMode):
    def __init__(self, guard: SyncGuard):
        super().__init__()
        self.guard = guard

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.guard.active and str(func).startswith(SyncGuard.SYNCING_OPS) and not _host_side_caller():
            raise RuntimeError(f"called a synchronizing operation: {func}")
        return func(*args, **(kwargs or {}))


def _host_side_caller() -> bool:
    """Whether torch's DataLoader made the call (it draws its seed from a CPU tensor, a host
    tensor on every machine): on CPU nothing else tells host tensors from device ones."""
    frame = inspect.currentframe()
    while frame is not None:
        if f"torch{os.sep}utils{os.sep}data{os.sep}" in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False


def _guard_training_steps(monkeypatch, guard: SyncGuard) -> dict:
    """Turn the guard on after the first optimiser step (warm-up: lazily made optimiser and scaler
    state) for the rest of the loop, except while logging, validating or checkpointing, whose
    device reads are the loop's deliberate syncs. Returns a count of fully guarded steps."""
    counts = {"guarded_steps": 0}
    real_step = _Loop._optimizer_step

    def step(self):
        was = guard.active
        real_step(self)
        counts["guarded_steps"] += was
        guard.active = True

    def unguarded(real):
        def call(self, *args):
            was, guard.active = guard.active, False
            try:
                return real(self, *args)
            finally:
                guard.active = was

        return call

    monkeypatch.setattr(_Loop, "_optimizer_step", step)
    for name in ("_log", "_validate", "_checkpoint"):
        monkeypatch.setattr(_Loop, name, unguarded(getattr(_Loop, name)))
    if not guard.cuda:
        # The trainer's AdamW is fused on CUDA only; unfused, the scaler reads found_inf on the host
        # (a sync on a GPU). The CPU variant steps the CUDA configuration, fused, to mirror it.
        real_build = train_module.build_optimizer

        def fused(model, optim, device):
            built = real_build(model, optim, device)
            groups = [{k: g[k] for k in ("params", "lr", "weight_decay", "name")} for g in built.param_groups]
            return torch.optim.AdamW(groups, betas=optim.betas, eps=optim.eps, fused=True)

        monkeypatch.setattr(train_module, "build_optimizer", fused)
    return counts


def _amp_for(device: str) -> str:
    return 'optim.amp="bf16"' if device == "cuda" else 'optim.amp="fp32"'


@pytest.mark.parametrize("device", DEVICES_TRAINING)
@pytest.mark.parametrize("text_cache", ["true", "false"])
def test_training_steps_never_make_the_host_wait_for_the_device(shard_dir, tmp_path, monkeypatch, device, text_cache):
    """Steps 2-8 (next batch from the prefetcher, forward with the text cache or the text tower,
    backward, clipping, scaler, AdamW, scheduler, loss bookkeeping) run under
    torch.cuda.set_sync_debug_mode("error"); only the log, validation and checkpoint steps read
    the device."""
    with SyncGuard(device) as guard:
        counts = _guard_training_steps(monkeypatch, guard)
        result = train(config_for(
            shard_dir, tmp_path / "run", device, _amp_for(device), "run.steps=8", "run.log_every=3",
            "run.val_every=4", "run.val_batches=1", "checkpoint.every_steps=5", f"model.text_cache={text_cache}",
        ))
    assert result.step == 8 and counts["guarded_steps"] == 7 and result.metrics["nonfinite_steps"] == 0


@pytest.mark.parametrize("device", DEVICES_TRAINING)
def test_the_sync_guard_catches_a_planted_sync(shard_dir, tmp_path, monkeypatch, device):
    """The harness above is not vacuous: one read of the loss on the host in step 3 fails the run."""
    real, calls = train_module.region_contrastive_loss, {"n": 0}

    def reads_the_loss(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        if calls["n"] == 3:
            float(loss.detach())  # a device-to-host read, as a stray .item() would be
        return loss

    monkeypatch.setattr(train_module, "region_contrastive_loss", reads_the_loss)
    with SyncGuard(device) as guard, pytest.raises(RuntimeError, match="synchroniz"):
        _guard_training_steps(monkeypatch, guard)
        train(config_for(shard_dir, tmp_path / "run", device, _amp_for(device), "run.steps=4", "run.log_every=10"))
    assert calls["n"] == 3


def _logged_losses(run_dir: Path) -> dict[int, float]:
    import json

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {row["step"]: row["loss"] for row in rows if "loss" in row}
