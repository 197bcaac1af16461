"""Training-step throughput of the RGBA CLIP, each case beside its baselines in one run.

Cases (synthetic batches, so the loader is not measured here; see fcbench.loader):
- lora: LoRA (r=16, q/k/v/out) + alpha conv trainable, text embeddings from a warm cache.
- lora_checkpointing: the same with activation checkpointing on the vision tower.
- baseline_full_vision: no LoRA: the whole vision tower trains (the recipe LoRA replaces).
- baseline_text_every_step: LoRA, but the frozen text tower runs on every batch (no cache).
- text_tower / text_cache: what the cache replaces, timed alone: one batch of captions through the
  frozen text tower (no_grad) against the same batch served from a warm cache. The step-level
  difference is too small to see through step-time noise where the vision tower dominates.
On CUDA each runs in bf16 (and lora also in fp32); rows carry step_ms, samples_per_s,
peak_mem_gib and, where the GPU's peak is known, MFU from a FLOP count of one step.
"""

from __future__ import annotations

import statistics
import time
from contextlib import nullcontext

import torch

from fcbench.common import emit, machine_info, record

# Dense bf16 peak, TFLOP/s, by a substring of torch.cuda.get_device_name().
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "4090": 165.0}


def vit_b16_config(image_size: int = 224):
    """OpenAI ViT-B/16 CLIP's architecture, randomly initialised (no download)."""
    from transformers import CLIPConfig

    return CLIPConfig(
        vision_config=dict(image_size=image_size, patch_size=16, hidden_size=768, intermediate_size=3072,
                           num_hidden_layers=12, num_attention_heads=12, hidden_act="quick_gelu"),
        text_config=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8,
                         max_position_embeddings=77, vocab_size=49408, hidden_act="quick_gelu", eos_token_id=49407),
        projection_dim=512,
    )


def tiny_config(image_size: int = 32):
    """A few-layer CLIP of the same shape family: the CPU check's stand-in for ViT-B/16."""
    from transformers import CLIPConfig

    return CLIPConfig(
        vision_config=dict(image_size=image_size, patch_size=16, hidden_size=64, intermediate_size=256,
                           num_hidden_layers=2, num_attention_heads=2),
        text_config=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                         max_position_embeddings=77, vocab_size=49408, eos_token_id=49407),
        projection_dim=64,
    )


ARCHS = {"vit-b16": vit_b16_config, "tiny": tiny_config}


def _model(case: str, device: torch.device, image_size: int, arch: str = "vit-b16"):
    from transformers import CLIPModel

    from fctrain.config import LoraConfig
    from fctrain.model import RGBAClip, apply_lora, set_gradient_checkpointing

    torch.manual_seed(0)
    with device:  # initialised where it trains: seconds less per case on a GPU
        clip = CLIPModel._from_config(ARCHS[arch](image_size), attn_implementation="sdpa")
        model = RGBAClip(clip)
    if case == "baseline_full_vision":
        model.requires_grad_(False)
        model.base_clip.vision_model.requires_grad_(True)
        model.base_clip.visual_projection.requires_grad_(True)
        model.alpha_embedding.requires_grad_(True)
    else:
        model = apply_lora(model, LoraConfig())
    set_gradient_checkpointing(model, case == "lora_checkpointing")
    return model.to(device).train()


def _time(call, device: torch.device, repeats: int) -> float:
    """Median seconds of call() over `repeats` runs after one warm-up."""
    call()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        call()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _run_case(case: str, dtype: torch.dtype | None, device: torch.device, batch: int, image_size: int, steps: int) -> dict:
    from fctrain.config import OptimConfig
    from fctrain.train import build_optimizer

    model = _model(case, device, image_size)
    optimizer = build_optimizer(model, OptimConfig(), device)
    row = _measure(case, model, optimizer, dtype, device, batch, image_size, steps)
    del model, optimizer
    return row


def _measure(
    case: str, model, optimizer, dtype: torch.dtype | None, device: torch.device, batch: int, image_size: int,
    steps: int, peak_tflops: float | None = None,
) -> dict:
    """One case at one batch size: step_ms, samples_per_s; on CUDA peak memory, TFLOP/s and MFU
    (against `peak_tflops`, else the datasheet's dense bf16 peak). fp16 steps go through a
    dynamic loss scaler, as the trainer's do."""
    from fctrain.loss import region_contrastive_loss
    from fctrain.text_cache import TextEmbeddingCache

    pixels = torch.randn(batch, 3, image_size, image_size, device=device)
    alpha = torch.randn(batch, 1, image_size, image_size, device=device)
    ids = torch.randint(1, 49406, (batch, 16))
    ids[:, -1] = 49407  # the end token
    mask = torch.ones_like(ids)
    keys = torch.arange(batch, device=device)
    cache = TextEmbeddingCache() if case != "baseline_text_every_step" else None
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    scale = torch.tensor(100.0, device=device)

    def step() -> None:
        with autocast:
            image_features = model(pixels, alpha)
            if cache is not None:
                text_features = cache.embed_tokens(ids, mask, model, device)
            else:
                with torch.no_grad():
                    text_features = model.encode_text(ids.to(device), mask.to(device))
        loss = region_contrastive_loss(image_features, text_features, keys, scale)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    flops = None
    if device.type == "cuda":
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            step()
        flops = counter.get_total_flops()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    step_s = _time(step, device, steps)  # the warm-up also warms the text cache
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    row = {
        "case": case, "dtype": _dtype_name(dtype), "batch": batch,
        "image_size": image_size, "step_ms": round(1000 * step_s, 1), "samples_per_s": round(batch / step_s, 1),
        "trainable_params": trainable,
    }
    if device.type == "cuda":
        row["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        name = torch.cuda.get_device_name(device)
        peak = peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
        row["tflops"] = round(flops / step_s / 1e12, 1)
        if peak and dtype in (torch.bfloat16, torch.float16):  # the same tensor-core peak for both
            row["mfu"] = round(flops / step_s / (peak * 1e12), 3)
            row["mfu_peak_tflops"] = round(peak, 1)
    return row


def _dtype_name(dtype: torch.dtype | None) -> str:
    return str(dtype).replace("torch.", "") if dtype else "fp32"


def _text_rows(device: torch.device, batch: int, dtype: torch.dtype | None, tokens: int = 16) -> list[dict]:
    """The text tower's forward per batch beside a warm cache lookup of the same captions."""
    from transformers import CLIPModel

    from fctrain.model import RGBAClip
    from fctrain.text_cache import TextEmbeddingCache

    torch.manual_seed(0)
    model = RGBAClip(CLIPModel._from_config(vit_b16_config(), attn_implementation="sdpa")).to(device).eval()
    ids = torch.randint(1, 49406, (batch, tokens))
    ids[:, -1] = 49407
    mask = torch.ones_like(ids)
    cache = TextEmbeddingCache()
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()

    def forward() -> None:
        with torch.no_grad(), autocast:
            model.encode_text(ids.to(device), mask.to(device))

    def lookup() -> None:
        with autocast:
            cache.embed_tokens(ids, mask, model, device)

    repeats = 10
    rows = [
        {"case": "text_tower", "step_ms": round(1000 * _time(forward, device, repeats), 2)},
        {"case": "text_cache", "step_ms": round(1000 * _time(lookup, device, repeats), 2)},
    ]
    for row in rows:
        row.update(dtype=_dtype_name(dtype), batch=batch, tokens=tokens)
    rows[1]["cache_speedup"] = round(rows[0]["step_ms"] / rows[1]["step_ms"], 1)
    return rows


def run(batch: int | None = None, image_size: int = 224, steps: int = 3, device: str = "auto", save: bool = True) -> list[dict]:
    machine = machine_info()
    emit({"bench": "step", "machine": machine})
    target = torch.device("cuda" if (device == "auto" and torch.cuda.is_available()) else ("cpu" if device == "auto" else device))
    batch = batch or (256 if target.type == "cuda" else 8)
    cases = [("lora", None), ("lora_checkpointing", None), ("baseline_full_vision", None), ("baseline_text_every_step", None)]
    if target.type == "cuda":
        cases = [(case, torch.bfloat16) for case, _ in cases] + [("lora", None)]
    rows = []
    for case, dtype in cases:
        try:
            row = _run_case(case, dtype, target, batch, image_size, steps)
        except torch.cuda.OutOfMemoryError:
            row = {"case": case, "dtype": str(dtype), "batch": batch, "error": "out of memory"}
            torch.cuda.empty_cache()
        rows.append(dict(row, bench="step", device=str(target)))
        emit(rows[-1])
    reference = next((r for r in rows if r["case"] == "lora" and "samples_per_s" in r), None)
    if reference:
        for row in rows:
            if "samples_per_s" in row:
                row["vs_lora"] = round(row["samples_per_s"] / reference["samples_per_s"], 3)
    text_dtype = torch.bfloat16 if target.type == "cuda" else None
    for row in _text_rows(target, batch, text_dtype):
        lora = next((r for r in rows if r["case"] == "lora" and r["dtype"] == row["dtype"] and "step_ms" in r), None)
        if lora:  # the share of a LoRA step that the cache saves (or costs)
            row["share_of_lora_step"] = round(row["step_ms"] / lora["step_ms"], 4)
        rows.append(dict(row, bench="step", device=str(target)))
        emit(rows[-1])
    if reference:
        emit({"bench": "step", "summary": {r["case"] + "_" + r["dtype"]: r.get("vs_lora") for r in rows}})
    if save:
        emit({"bench": "step", "recorded": str(record("step", rows, machine))})
    return rows


SWEEP_CASES = ("lora", "lora_checkpointing", "baseline_full_vision")


def sweep(
    batches: tuple[int, ...] = (64, 128, 256, 512), cases: tuple[str, ...] = SWEEP_CASES, image_size: int = 224,
    steps: int = 3, device: str = "auto", arch: str = "vit-b16", peak_tflops: float | None = None,
    memory_cap_gib: float | None = 16.0, save: bool = True,
) -> list[dict]:
    """Each case over growing batch sizes (bf16 on CUDA, fp32 on CPU), stopping at the first that
    does not fit; then fp16 at LoRA's best batch; then, under a `memory_cap_gib` limit on this
    process's GPU memory, the batches LoRA with checkpointing still trains at (a 16-GB card).
    MFU is against `peak_tflops` when given (gpu_check measures it), else the datasheet's."""
    from fctrain.config import OptimConfig
    from fctrain.train import build_optimizer

    machine = machine_info()
    emit({"bench": "step", "machine": machine})
    target = torch.device("cuda" if (device == "auto" and torch.cuda.is_available()) else ("cpu" if device == "auto" else device))
    cuda = target.type == "cuda"
    half = torch.bfloat16 if cuda else None
    rows: list[dict] = []

    def add(row: dict) -> None:
        rows.append(dict(row, bench="step", device=str(target), arch=arch))
        emit(rows[-1])

    def over_batches(case: str, dtype, sizes, **extra) -> None:
        model = _model(case, target, image_size, arch)
        optimizer = build_optimizer(model, OptimConfig(), target)
        for batch in sizes:
            try:
                add(dict(_measure(case, model, optimizer, dtype, target, batch, image_size, steps, peak_tflops), **extra))
            except torch.cuda.OutOfMemoryError:
                add(dict(case=case, dtype=_dtype_name(dtype), batch=batch, error="out of memory", **extra))
                break
            finally:
                optimizer.zero_grad(set_to_none=True)
                if cuda:
                    torch.cuda.empty_cache()
        del model, optimizer
        if cuda:
            torch.cuda.empty_cache()

    for case in cases:
        over_batches(case, half, batches)
    fitted = [r for r in rows if r["case"] == "lora" and "samples_per_s" in r]
    if cuda and fitted:
        best = max(fitted, key=lambda r: r["samples_per_s"])
        over_batches("lora", torch.float16, [best["batch"]])
    if cuda and memory_cap_gib:
        total = torch.cuda.get_device_properties(target).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, memory_cap_gib * 2**30 / total), target)
        try:
            over_batches("lora_checkpointing", half, batches, memory_cap_gib=memory_cap_gib)
        finally:
            torch.cuda.set_per_process_memory_fraction(1.0, target)
    if save:
        emit({"bench": "step", "recorded": str(record("step-sweep", rows, machine))})
    return rows
