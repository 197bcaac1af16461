"""Typed training configuration: one dataclass per section, nested in TrainConfig.

Precedence: defaults < TOML file < command-line overrides. The resolved config is saved beside
the run's outputs and inside every checkpoint. Standard library only, so the CLI can use it
without importing torch.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from fcdata.errors import UserError
from fcdata.options import LoaderOptions

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ARCHITECTURES = ("alpha_conv", "object_guided")  # ModelConfig.architecture
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


@dataclass
class ModelConfig:
    # "tiny" builds the small test/quick-start model from a config and a tokenizer trained on the
    # data's phrases; anything else is a local directory (or a hub id already in the local cache)
    # holding a CLIPModel and its tokenizer. Nothing is ever downloaded.
    name_or_path: str = "tiny"
    image_size: int = 224  # input resolution of the vision tower, px
    # How the mask reaches the image embedding: "alpha_conv" (Alpha-CLIP's zero-initialised alpha
    # patch conv) or "object_guided" (object and mask conv paths fused with CLIP's patch features;
    # fctrain.object_guided)
    architecture: str = "alpha_conv"
    attn_implementation: str = "sdpa"  # "sdpa" or "eager"
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~30% slower
    compile: bool = False  # torch.compile the vision tower
    text_cache: bool = True  # cache caption embeddings of the frozen text tower by caption (not with lora.text_targets)
    text_cache_entries: int = 2_000_000  # LRU bound: ~2 KB each in fp32 at width 512 (VG: ~4M distinct phrases)
    tiny_pretrain_steps: int = 300  # "tiny" only: CLIP-style pretraining on region crops when it is created
    tiny_pretrain_full_images: float = 0.0  # "tiny" only: share of pretraining images also seen whole, with a region's caption

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise UserError(f"model.architecture must be one of {', '.join(ARCHITECTURES)}")
        if self.attn_implementation not in ("sdpa", "eager"):
            raise UserError("model.attn_implementation must be 'sdpa' or 'eager'")
        if self.image_size < 32 or self.image_size % 16:
            raise UserError("model.image_size must be a multiple of 16, at least 32")
        if not 0 <= self.tiny_pretrain_full_images <= 1:
            raise UserError("model.tiny_pretrain_full_images must be in [0, 1]")


@dataclass
class LoraConfig:
    rank: int = 16  # LoRA rank r
    alpha: float = 16.0  # LoRA scaling numerator (update scaled by alpha / rank)
    dropout: float = 0.0  # dropout on the LoRA input
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "out_proj")  # vision-block linears
    # Text-block linears with LoRA too (NegCLIP-style: word order can matter); () = frozen text tower.
    text_targets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.targets, self.text_targets = tuple(self.targets), tuple(self.text_targets)
        for name, targets in (("targets", self.targets), ("text_targets", self.text_targets)):
            unknown = sorted(set(targets) - set(LORA_TARGETS))
            if unknown:
                raise UserError(f"lora.{name}: unknown {unknown}; choose from {list(LORA_TARGETS)}")
        if self.rank < 1:
            raise UserError("lora.rank must be >= 1")
        if not self.targets:
            raise UserError("lora.targets must name at least one projection")


@dataclass
class LossConfig:
    # Softmax temperature as CLIP's logit scale; 0 keeps the checkpoint's own (OpenAI CLIP's is
    # 100, the value Alpha-CLIP fixes; a small model pretrained here ends elsewhere).
    logit_scale: float = 0.0
    learn_logit_scale: bool = False  # train it (clamped to max_logit_scale after every step)
    max_logit_scale: float = 100.0  # the clamp (open_clip clamps at ln 100)
    label_smoothing: float = 0.0  # share of each target spread over the other candidates (Alpha-CLIP: 0.1)

    def __post_init__(self) -> None:
        if not 0 <= self.logit_scale <= self.max_logit_scale:
            raise UserError("loss.logit_scale must be in [0, loss.max_logit_scale] (0: the checkpoint's own)")
        if not 0 <= self.label_smoothing < 1:
            raise UserError("loss.label_smoothing must be in [0, 1)")


@dataclass
class OptimConfig:
    lr: float = 1e-4  # peak learning rate of the LoRA weights
    alpha_lr_multiplier: float = 10.0  # the mask module (alpha conv, or object_guided's paths) learns this much faster: it starts fresh
    weight_decay: float = 0.05  # AdamW decoupled weight decay (not on the mask module)
    betas: tuple[float, float] = (0.9, 0.98)  # AdamW betas
    eps: float = 1e-6  # AdamW epsilon
    warmup_steps: int = 100  # linear warm-up from 0, then cosine decay to min_lr_ratio * lr
    min_lr_ratio: float = 0.0  # floor of the cosine schedule
    grad_clip: float = 1.0  # max global gradient norm (0 = off)
    grad_accum: int = 1  # micro-batches per optimiser step
    amp: str = "auto"  # "auto" (bf16 on CUDA if supported, else fp32), "bf16", "fp16" (with a scaler), "fp32"

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        if self.amp not in ("auto", "bf16", "fp16", "fp32"):
            raise UserError("optim.amp must be auto, bf16, fp16 or fp32")
        if self.grad_accum < 1 or self.warmup_steps < 0 or self.lr <= 0:
            raise UserError("optim.grad_accum >= 1, optim.warmup_steps >= 0 and optim.lr > 0 are required")


@dataclass
class CheckpointConfig:
    every_steps: int = 500  # write a checkpoint every this many optimiser steps (and at the end)
    keep_last: int = 3  # older checkpoints are deleted
    resume: str = ""  # "latest" (the run's newest checkpoint), a checkpoint directory, or "" for none

    def __post_init__(self) -> None:
        if self.every_steps < 1 or self.keep_last < 1:
            raise UserError("checkpoint.every_steps and checkpoint.keep_last must be >= 1")


@dataclass
class RunConfig:
    out_dir: str = "runs/train"  # checkpoints, metrics.jsonl, config.toml, the tiny model
    steps: int = 1000  # optimiser steps to train
    val_shards: str = ""  # shards for validation loss (default: the val split beside data.shards)
    val_every: int = 250  # validation every this many steps (0 = never)
    val_batches: int = 20  # batches per validation
    log_every: int = 10  # metrics (and the one device sync for non-finite checks) every this many steps
    max_nonfinite: int = 10  # stop (at a log step) once more optimiser steps than this were skipped for a non-finite loss
    seed: int = 0  # the run's seed: the tiny model, LoRA's init, and the data stream unless data.seed is given
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1"...

    def __post_init__(self) -> None:
        if self.steps < 1 or self.log_every < 1:
            raise UserError("run.steps and run.log_every must be >= 1")


@dataclass
class TrainConfig:
    run: RunConfig = field(default_factory=RunConfig)
    data: LoaderOptions = field(default_factory=LoaderOptions)
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)

    def to_dict(self) -> dict:
        return {section.name: dataclasses.asdict(getattr(self, section.name)) for section in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        sections = {}
        for section in dataclasses.fields(cls):
            values = dict(data.get(section.name, {}))
            known = {f.name: f for f in dataclasses.fields(section.default_factory)}
            unknown = sorted(set(values) - set(known))
            if unknown:
                raise UserError(f"unknown setting {section.name}.{unknown[0]} (known: {', '.join(sorted(known))})")
            types = typing.get_type_hints(section.default_factory)
            for name, value in values.items():
                values[name] = _checked(f"{section.name}.{name}", value, types[name])
            if section.name == "data" and "seed" not in values:
                # One seed for the whole run, as users expect; data.seed splits it off when asked
                # (e.g. the same data order under several inits). The resolved value is saved.
                values["seed"] = sections["run"].seed
            sections[section.name] = section.default_factory(**values)
        unknown_sections = sorted(set(data) - set(sections))
        if unknown_sections:
            raise UserError(f"unknown config section [{unknown_sections[0]}] (known: {', '.join(sections)})")
        return cls(**sections)


def _checked(key: str, value, expected):
    """`value` as the field's type (an int where a float is expected becomes a float, a list a
    tuple), or a UserError naming the key: a wrong type would otherwise fail later, far away."""
    origin = typing.get_origin(expected)
    if origin is tuple:
        items = typing.get_args(expected)
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{key} must be a list, got {value!r}")
        if items[-1] is Ellipsis:
            items = (items[0],) * len(value)
        elif len(value) != len(items):
            raise UserError(f"{key} must be a list of {len(items)} values, got {list(value)!r}")
        return tuple(_checked(f"{key}[{i}]", v, t) for i, (v, t) in enumerate(zip(value, items)))
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected in (int, float, str, bool) and (type(value) is not expected):
        raise UserError(f"{key} must be {_TYPE_NAMES[expected]}, got {value!r}")
    return value


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string (quoted in TOML)", bool: "true or false"}


def load_config(path: Path | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """defaults < TOML file < `section.key=value` overrides (values parsed as TOML literals)."""
    data: dict = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise UserError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise UserError(f"{path}: {exc}") from None
    for override in overrides:
        key, sep, raw = override.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot:
            raise UserError(f"--set expects section.key=value, got {override!r}")
        data.setdefault(section, {})[name] = _parse_value(raw.strip())
    return TrainConfig.from_dict(data)


def _parse_value(raw: str):
    try:
        return tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        return raw  # a bare word: a string


def to_toml(config: TrainConfig) -> str:
    """The resolved config as TOML that load_config reads back to an equal config."""
    lines = []
    for section, values in config.to_dict().items():
        lines.append(f"[{section}]")
        for name, value in values.items():
            lines.append(f"{name} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a TOML basic string is a JSON string


@dataclass(frozen=True)
class DemoOptions:
    out_dir: Path = Path("fc-demo")  # everything goes below this folder
    images: int = 600  # generated images (VG quirks planted among them)
    steps: int = 300  # LoRA + alpha-conv fine-tuning steps
    object_guided_steps: int = 600  # the object-guided fine-tuning's steps (its recipe: fctrain.demo)
    pretrain_steps: int = 300  # the tiny model's CLIP pretraining steps
    eval_images: int = 100  # validation images evaluated
    seed: int = 0  # data and model seed
    workers: int = 0  # processes for generating, sharding and loading, 0 = all cores
    object_guided: bool = True  # also fine-tune the object_guided architecture (same tiny CLIP), add its rows, export it


# The rows of `fc eval`: the fine-tuned model, CLIP itself, and training-free prompts (fctrain.prompts).
# Each box prompt sits beside its mask version (crop to the mask's box, blur / gray outside the mask).
EVAL_METHODS = ("focus", "focus_mask", "focus_whole", "untrained", "whole_image", "crop", "crop_mask", "blur", "blur_mask", "grayscale", "grayscale_mask",
                "red_outline", "attention_bias")


@dataclass(frozen=True)
class EvalOptions:
    shards: str = ""  # validation shards (a shard folder uses its val-*.tar)
    split: str = "val"  # which split's shards to take from a folder
    max_images: int = 500  # images evaluated (the first ones of the shards, in order)
    max_regions: int = 16  # candidate regions per image (distinct phrases)
    methods: tuple[str, ...] = EVAL_METHODS  # which rows to compute
    batch_size: int = 64  # images per forward pass
    iou_threshold: float = 0.5  # box selection also accepts a box overlapping the right one this much
    attention_strength: float = 0.2  # peak attention-logit bias of the attention_bias baseline
    class_names: tuple[str, ...] = ()  # zero-shot classes; default: the VG object names present
    examples: int = 8  # box-selection examples kept for pictures

    def __post_init__(self) -> None:
        if self.max_images < 1 or self.max_regions < 2 or self.batch_size < 1:
            raise UserError("eval needs max_images >= 1, max_regions >= 2 (box selection picks among them) and batch_size >= 1")
