"""Typed training configuration: one dataclass per section, nested in TrainConfig.

Precedence: defaults < TOML file < command-line overrides. The resolved config is saved beside
the run's outputs and inside every checkpoint. Standard library only, so the CLI can use it
without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fcdata.errors import UserError

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


@dataclass
class ModelConfig:
    # "tiny" builds the small test/quick-start model from a config and a tokenizer trained on the
    # data's phrases; anything else is a local directory (or a hub id already in the local cache)
    # holding a CLIPModel and its tokenizer. Nothing is ever downloaded.
    name_or_path: str = "tiny"
    image_size: int = 224  # input resolution of the vision tower, px
    attn_implementation: str = "sdpa"  # "sdpa" or "eager"
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~30% slower
    compile: bool = False  # torch.compile the vision tower
    text_cache: bool = True  # cache caption embeddings of the frozen text tower by caption

    def __post_init__(self) -> None:
        if self.attn_implementation not in ("sdpa", "eager"):
            raise UserError("model.attn_implementation must be 'sdpa' or 'eager'")
        if self.image_size < 32 or self.image_size % 16:
            raise UserError("model.image_size must be a multiple of 16, at least 32")


@dataclass
class LoraConfig:
    rank: int = 16  # LoRA rank r
    alpha: float = 16.0  # LoRA scaling numerator (update scaled by alpha / rank)
    dropout: float = 0.0  # dropout on the LoRA input
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "out_proj")  # vision-block linears

    def __post_init__(self) -> None:
        self.targets = tuple(self.targets)
        unknown = sorted(set(self.targets) - set(LORA_TARGETS))
        if unknown:
            raise UserError(f"lora.targets: unknown {unknown}; choose from {list(LORA_TARGETS)}")
        if self.rank < 1:
            raise UserError("lora.rank must be >= 1")
        if not self.targets:
            raise UserError("lora.targets must name at least one projection")


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
