"""The RGBA CLIP model: a Hugging Face CLIPModel plus an alpha patch embedding, LoRA on the vision
tower, and the helpers the trainer needs around it (loading, checkpoints of the trainable part,
activation checkpointing). The caption-embedding cache is fctrain.text_cache.

Alpha-CLIP's design: a second patch-embedding conv reads the alpha mask (1 = the region) and its
output is added to the RGB patch embedding before the class token, positional embedding and
pre-LayerNorm. It starts at zero, so at step 0 the model is exactly CLIP.

RGBAClip is also the base of the model family chosen by `model.architecture`: the second member,
Object-Guided CLIP (fctrain.object_guided), replaces the alpha conv by its own mask module and
vision forward; LoRA, freezing, saving and loading here work on either through `mask_module`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import torch
from peft import PeftConfig, PeftModel, get_peft_model, set_peft_model_state_dict
from peft import LoraConfig as PeftLoraConfig
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, CLIPConfig, CLIPModel

from fcdata.captions import clean_caption
from fcdata.errors import UserError
from fcdata.outputs import write_directory_atomically
from fctrain.config import LoraConfig, ModelConfig
from fctrain.tokenizer import build_tokenizer, load_tokenizer

log = logging.getLogger("fc")

ALPHA_WEIGHTS = "alpha_embedding.safetensors"  # {"weight": D x 1 x P x P}, beside adapters and exports
ADAPTER_CONFIG = "adapter_config.json"  # peft's names
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_SUBMODULE = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "out_proj": "self_attn",
              "fc1": "mlp", "fc2": "mlp"}

# The tiny model: small enough that a CPU test runs a forward in milliseconds.
TINY_WIDTH = 128
TINY_LAYERS = 4
TINY_HEADS = 4


# ---------------------------------------------------------------------------------------------
# Building and loading CLIP


def create_tiny_model(
    out_dir: Path, phrases: Iterable[str], image_size: int = 224, seed: int = 0,
    pretrain: Callable[[CLIPModel, object], None] | None = None,
) -> Path:
    """Train a tokenizer on `phrases` and save it with a small CLIPModel into `out_dir`.

    `pretrain(clip, tokenizer)`, if given, trains the fresh model before it is saved (see
    fctrain.pretrain): a random text tower is no stand-in for CLIP's. The same phrases, size, seed
    and pretraining give the same weights. Written atomically.
    """
    out_dir = Path(out_dir)
    with write_directory_atomically(out_dir) as tmp:
        tokenizer = build_tokenizer(map(clean_caption, phrases), tmp)  # trained on what it will be given
        config = CLIPConfig(
            text_config=dict(
                vocab_size=len(tokenizer),
                hidden_size=TINY_WIDTH,
                intermediate_size=4 * TINY_WIDTH,
                num_hidden_layers=TINY_LAYERS,
                num_attention_heads=TINY_HEADS,
                max_position_embeddings=tokenizer.model_max_length,
                # The text tower pools at the first eos_token_id; 2 would switch HF to its legacy
                # argmax(input_ids) pooling, which our tokenizer's ids do not satisfy.
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            ),
            vision_config=dict(
                image_size=image_size,
                patch_size=16,
                hidden_size=TINY_WIDTH,
                intermediate_size=4 * TINY_WIDTH,
                num_hidden_layers=TINY_LAYERS,
                num_attention_heads=TINY_HEADS,
            ),
            projection_dim=TINY_WIDTH,
            logit_scale_init_value=math.log(100.0),  # CLIP fine-tuning recipes (Alpha-CLIP) fix the temperature at 100
        )
        check_text_pooling(config.text_config, tokenizer)
        with torch.random.fork_rng(devices=[]):  # seed the init without disturbing the caller's RNG
            torch.manual_seed(seed)
            clip = CLIPModel(config)
        if pretrain is not None:
            pretrain(clip, tokenizer)
        clip.save_pretrained(tmp)  # safetensors
    return out_dir


def load_clip(model: ModelConfig | str | Path) -> tuple[CLIPModel, object]:
    """Load a CLIPModel (float32) and its tokenizer from a local directory, or a hub id that is
    already in the local Hugging Face cache. Nothing is downloaded.

    With a ModelConfig, its attention implementation is used and its image size is checked
    against the model's.
    """
    cfg = model if isinstance(model, ModelConfig) else None
    source = cfg.name_or_path if cfg else str(model)
    attn = cfg.attn_implementation if cfg else "sdpa"
    local = Path(source).expanduser()
    where = str(local) if local.exists() else source
    if local.exists() and not local.is_dir():
        raise UserError(f"model {source!r} is a file; give the directory that holds config.json")
    try:
        config = AutoConfig.from_pretrained(where, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise UserError(
            f"model {source!r}: no CLIP model there (need a local directory with config.json, weights and "
            f"tokenizer, or a hub id already in the local Hugging Face cache; nothing is downloaded)"
        ) from exc
    if not isinstance(config, CLIPConfig):
        raise UserError(f"model {source!r} is a {config.model_type!r} model; Focus-CLIP needs a CLIP model")
    try:
        clip = CLIPModel.from_pretrained(
            where, config=config, attn_implementation=attn, dtype=torch.float32, local_files_only=True
        )
    except (OSError, ValueError) as exc:
        raise UserError(f"model {source!r}: cannot load the CLIP weights ({exc})".splitlines()[0]) from exc
    tokenizer = load_tokenizer(where, f"model {source!r}")
    if len(tokenizer) > clip.config.text_config.vocab_size:
        raise UserError(f"model {source!r}: the tokenizer has {len(tokenizer)} tokens, the text tower "
                        f"{clip.config.text_config.vocab_size}: they do not belong together")
    check_text_pooling(clip.config.text_config, tokenizer)
    vision_size = clip.config.vision_config.image_size
    if cfg and vision_size != cfg.image_size:
        raise UserError(f"model.image_size is {cfg.image_size} but model {source!r} takes {vision_size} px images")
    return clip, tokenizer


def check_text_pooling(text_config, tokenizer) -> None:
    """Fail unless HF's CLIP text tower will pool each caption at the tokenizer's end token.

    HF pools at argmax(input_ids) when the config's eos_token_id is 2 (legacy OpenAI configs, right
    only when the end token is the largest id), else at the first position equal to eos_token_id.
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise UserError("the tokenizer has no end-of-text token; CLIP pools the caption there")
    if text_config.eos_token_id == 2:
        if eos != len(tokenizer) - 1:
            raise UserError(
                f"text config has legacy eos_token_id 2 (pool at the largest id) but the tokenizer's end token "
                f"{eos} is not its largest id {len(tokenizer) - 1}; set text_config.eos_token_id to {eos}"
            )
    elif text_config.eos_token_id != eos:
        raise UserError(
            f"text config eos_token_id {text_config.eos_token_id} differs from the tokenizer's end token {eos}"
        )


# ---------------------------------------------------------------------------------------------
# The RGBA model


def rgba_vision_forward(model: RGBAClip, pixel_values: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """CLIP's vision forward with the alpha patch embedding added; projected, not normalised.

    A plain function of the model (rather than a bound method) so that torch.compile of it can be
    shared by copies of the model without calling into the original.
    """
    clip = model.base_clip
    vision = clip.vision_model
    emb = vision.embeddings
    size = emb.image_size
    check_vision_inputs(size, pixel_values, alpha)
    dtype = emb.patch_embedding.weight.dtype
    patches = emb.patch_embedding(pixel_values.to(dtype)) + model.alpha_embedding(alpha.to(dtype))  # B x D x g x g
    patches = patches.flatten(2).transpose(1, 2)  # B x g*g x D
    cls = emb.class_embedding.expand(patches.shape[0], 1, -1)  # B x 1 x D
    hidden = torch.cat([cls, patches], dim=1) + emb.position_embedding(emb.position_ids)  # B x (1 + g*g) x D
    hidden = vision.pre_layrnorm(hidden)
    hidden = vision.encoder(inputs_embeds=hidden).last_hidden_state
    pooled = vision.post_layernorm(hidden[:, 0])  # the class token, B x D
    return clip.visual_projection(pooled)


def check_vision_inputs(size: int, pixel_values: torch.Tensor, alpha: torch.Tensor) -> None:
    if pixel_values.shape[-2:] != (size, size) or alpha.shape[-2:] != (size, size) or alpha.shape[1] != 1:
        raise ValueError(
            f"expected pixel_values B x 3 x {size} x {size} and alpha B x 1 x {size} x {size}, "
            f"got {tuple(pixel_values.shape)} and {tuple(alpha.shape)}"
        )


class RGBAClip(nn.Module):
    """A CLIPModel (`self.clip`; a peft model wrapping it after `apply_lora`) whose vision tower
    also reads an alpha mask through `self.alpha_embedding`, a zero-initialised patch conv.

    `forward(pixel_values, alpha)` is `encode_image`, so DDP sees the trainable path.

    The base of the model family (`model.architecture`): a subclass replaces the part that reads
    the mask (`mask_module`, trained in full beside LoRA) and the vision forward, and keeps the
    rest (fctrain.object_guided).
    """

    architecture = "alpha_conv"
    mask_weights = ALPHA_WEIGHTS  # the file the mask module is saved in, beside adapters and in exports
    mask_title = "alpha conv"  # in the trainable-parameter summary
    vision_forward = staticmethod(rgba_vision_forward)

    def __init__(self, clip: CLIPModel):
        super().__init__()
        self._attach(clip)
        vision = clip.config.vision_config
        weight = clip.vision_model.embeddings.patch_embedding.weight
        self.alpha_embedding = nn.Conv2d(
            1, vision.hidden_size, kernel_size=vision.patch_size, stride=vision.patch_size, bias=False,
            device=weight.device, dtype=weight.dtype,
        )
        # Zero: the model equals CLIP at step 0 and training decides how much the alpha matters.
        nn.init.zeros_(self.alpha_embedding.weight)

    def _attach(self, clip: CLIPModel) -> None:
        self.clip = clip
        # The text tower trains only through LoRA (lora.text_targets); frozen, its embeddings are cached.
        clip.text_model.requires_grad_(False)
        clip.text_projection.requires_grad_(False)
        self._vision_forward = type(self).vision_forward

    @property
    def mask_module(self) -> nn.Module:
        """The part that reads the mask: trained in full (not through LoRA), saved in `mask_weights`."""
        return self.alpha_embedding

    def save_mask_module(self, path: Path) -> None:
        save_alpha_embedding(self, path)

    def load_mask_module(self, path: Path) -> None:
        load_alpha_embedding(self, path)

    @contextlib.contextmanager
    def mask_off(self) -> Iterator[None]:
        """The model without its mask path (the alpha conv zero): CLIP's vision tower with any LoRA."""
        saved = self.alpha_embedding.weight.detach().clone()
        self.alpha_embedding.weight.data.zero_()
        try:
            yield
        finally:
            self.alpha_embedding.weight.data.copy_(saved)

    @property
    def base_clip(self) -> CLIPModel:
        """The CLIPModel itself, whether or not LoRA is applied (LoRA layers sit inside it)."""
        return self.clip.get_base_model() if isinstance(self.clip, PeftModel) else self.clip

    @property
    def peft_model(self) -> PeftModel | None:
        """The peft wrapper (for `save_pretrained`/adapter loading), or None before `apply_lora`."""
        return self.clip if isinstance(self.clip, PeftModel) else None

    @property
    def has_text_adapters(self) -> bool:
        """LoRA on the text tower (lora.text_targets): its caption features are not CLIP's."""
        return any(isinstance(m, LoraLayer) for m in self.base_clip.text_model.modules())

    @property
    def logit_scale(self) -> nn.Parameter:
        """CLIP's log temperature (HF does not clamp it; ln 100 for OpenAI CLIP)."""
        return self.base_clip.logit_scale

    @property
    def image_size(self) -> int:
        return self.base_clip.config.vision_config.image_size

    def encode_image(self, pixel_values: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """pixel_values B x 3 x S x S (CLIP-normalised), alpha B x 1 x S x S ((a - 0.5) / 0.26,
        a in [0, 1], graded allowed) -> B x D projected features, not L2-normalised."""
        return self._vision_forward(self, pixel_values, alpha)

    def forward(self, pixel_values: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        return self.encode_image(pixel_values, alpha)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """B x L token ids (padded) -> B x D projected features of the text tower (with any text LoRA)."""
        clip = self.base_clip
        pooled = clip.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return clip.text_projection(pooled)


def compile_vision(model: RGBAClip, **compile_kwargs) -> bool:
    """torch.compile the vision forward (mask module + tower); False, with a warning, where
    torch.compile cannot run here. The text tower stays eager (its outputs are cached)."""
    try:
        supported = torch._dynamo.is_dynamo_supported()
    except Exception:  # noqa: BLE001 - any failure to ask means "not available"
        supported = False
    if not supported:
        log.warning("model.compile: torch.compile is not supported on this platform/Python; running eagerly")
        return False
    model._vision_forward = torch.compile(type(model).vision_forward, **compile_kwargs)
    return True


# ---------------------------------------------------------------------------------------------
# LoRA and the trainable state


def lora_pattern(targets: Sequence[str], text_targets: Sequence[str]) -> str:
    """peft target regex (full match on module paths) for the named linears `targets` of every
    vision block and `text_targets` of every text block. Each tower is named: the two have modules
    of the same names, so bare names would put LoRA on both."""
    blocks = []
    for tower, names in (("vision_model", targets), ("text_model", text_targets)):
        if names:
            linears = "|".join(f"{_SUBMODULE[t]}\\.{t}" for t in names)
            blocks.append(rf"{tower}\.encoder\.layers\.\d+\.({linears})")
    return rf".*({'|'.join(blocks)})"


def apply_lora(model: RGBAClip, lora: LoraConfig, train_logit_scale: bool = False) -> RGBAClip:
    """Put LoRA on `lora.targets` of every vision block (and `lora.text_targets` of every text block)
    and freeze everything but LoRA and the mask module (and the logit scale if `train_logit_scale`).
    `model.clip` becomes the peft model."""
    if model.peft_model is not None:
        raise ValueError("LoRA is already applied to this model")
    config = PeftLoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora_pattern(lora.targets, lora.text_targets),
        bias="none",
    )
    with _quiet_peft():
        model.clip = get_peft_model(model.clip, config)  # freezes every base weight
    _freeze_all_but_trainable(model, train_logit_scale)
    clip = model.base_clip
    for tower, targets, layers in (
        (clip.vision_model, lora.targets, clip.config.vision_config.num_hidden_layers),
        (clip.text_model, lora.text_targets, clip.config.text_config.num_hidden_layers),
    ):
        wrapped = sum(isinstance(m, LoraLayer) for m in tower.modules())
        if wrapped != layers * len(targets):  # the pattern missed: a transformers renaming, say
            raise RuntimeError(f"LoRA wrapped {wrapped} modules, expected {layers} layers x {len(targets)} targets")
    return model


@contextlib.contextmanager
def _quiet_peft() -> Iterator[None]:
    """peft asks transformers 5 a deprecated question (is_gradient_checkpointing); not ours to fix."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def _freeze_all_but_trainable(model: RGBAClip, train_logit_scale: bool) -> None:
    for name, param in model.clip.named_parameters():
        param.requires_grad_("lora_" in name)
    model.mask_module.requires_grad_(True)
    model.logit_scale.requires_grad_(train_logit_scale)


def save_adapters(model: RGBAClip, directory: Path) -> None:
    """Write the trainable state: peft's adapter_config.json + adapter_model.safetensors and the
    mask module (`model.mask_weights`). Atomicity is the caller's (checkpoints write to a temporary dir)."""
    if model.peft_model is None:
        raise ValueError("the model has no LoRA adapters; call apply_lora first")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.peft_model.save_pretrained(str(directory))
    model.save_mask_module(directory / model.mask_weights)


def load_adapters(model: RGBAClip, directory: Path) -> RGBAClip:
    """Load what `save_adapters` wrote. A model with LoRA must have the same LoRA settings; a model
    without gets the saved adapters attached (trainable, as after `apply_lora`)."""
    directory = Path(directory)
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS, model.mask_weights):
        if not (directory / name).is_file():
            raise UserError(f"{directory}: no {name}; not an adapter directory written by save_adapters")
    if model.peft_model is None:
        with _quiet_peft():
            model.clip = PeftModel.from_pretrained(model.clip, str(directory), is_trainable=True)
        _freeze_all_but_trainable(model, train_logit_scale=False)
    else:
        saved = PeftConfig.from_pretrained(str(directory))
        current = model.peft_model.peft_config["default"]
        fields = ("r", "lora_alpha", "target_modules")
        if any(getattr(saved, f) != getattr(current, f) for f in fields):
            raise UserError(
                f"{directory}: adapters were saved with "
                f"{ {f: getattr(saved, f) for f in fields} }, the model has { {f: getattr(current, f) for f in fields} }"
            )
        device = next(model.parameters()).device
        result = set_peft_model_state_dict(model.peft_model, load_file(directory / ADAPTER_WEIGHTS, device=str(device)))
        missing = [k for k in result.missing_keys if "lora_" in k]
        if missing or result.unexpected_keys:
            raise UserError(f"{directory}: adapter weights do not fit the model (missing {missing[:2]}, "
                            f"unexpected {list(result.unexpected_keys)[:2]})")
    model.load_mask_module(directory / model.mask_weights)
    return model


def save_alpha_embedding(model: RGBAClip, path: Path) -> None:
    save_file({"weight": model.alpha_embedding.weight.detach().cpu().contiguous()}, str(path))


def load_alpha_embedding(model: RGBAClip, path: Path) -> None:
    weight = load_file(str(path))["weight"]
    if weight.shape != model.alpha_embedding.weight.shape:
        raise UserError(f"{path}: alpha embedding {tuple(weight.shape)} does not fit the model's "
                        f"{tuple(model.alpha_embedding.weight.shape)}")
    with torch.no_grad():
        model.alpha_embedding.weight.copy_(weight)


def parameter_counts(model: RGBAClip) -> dict[str, int]:
    """Parameter counts: total/trainable overall and of the vision tower (its transformer with any
    LoRA, the visual projection and the mask module), and the vision LoRA, text LoRA and
    mask-module parts (the latter under "alpha", the alpha conv's name in the default architecture)."""
    counts = dict.fromkeys(("total", "trainable", "vision", "vision_trainable", "lora", "text_lora", "alpha"), 0)
    mask = {id(p) for p in model.mask_module.parameters()}
    for name, param in model.named_parameters():
        n = param.numel()
        vision = "vision_model." in name or "visual_projection" in name or id(param) in mask
        counts["total"] += n
        counts["trainable"] += n * param.requires_grad
        counts["vision"] += n * vision
        counts["vision_trainable"] += n * (vision and param.requires_grad)
        counts["lora"] += n * ("lora_" in name and vision)
        counts["text_lora"] += n * ("lora_" in name and not vision)
        counts["alpha"] += n * (id(param) in mask)
    return counts


def trainable_summary(model: RGBAClip) -> str:
    """One line; for ViT-B/16 with LoRA r=16 on q/k/v/out: 'trainable 1,376,256 of 150,996,993
    parameters (0.91%); vision tower: 1.38M of 87.6M (1.57%; LoRA 1.18M, alpha conv 0.20M)'."""
    c = parameter_counts(model)
    return (
        f"trainable {c['trainable']:,} of {c['total']:,} parameters ({100 * c['trainable'] / c['total']:.2f}%); "
        f"vision tower: {_millions(c['vision_trainable'])} of {_millions(c['vision'])} "
        f"({100 * c['vision_trainable'] / c['vision']:.2f}%; LoRA {_millions(c['lora'])}, "
        f"{model.mask_title} {_millions(c['alpha'])})"
        + (f"; text tower LoRA {_millions(c['text_lora'])}" if c["text_lora"] else "")
    )


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n < 10e6 else f"{n / 1e6:.1f}M"


def set_gradient_checkpointing(model: RGBAClip, enabled: bool) -> None:
    """Recompute each vision block's activations in backward (non-reentrant, so frozen base weights
    with LoRA still get gradients without forcing requires_grad on inputs). Only in train mode."""
    vision = model.base_clip.vision_model
    if enabled:
        if hasattr(vision, "activation_checkpointing_enable"):  # transformers >= 5.x name
            vision.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            vision.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    elif hasattr(vision, "activation_checkpointing_disable"):
        vision.activation_checkpointing_disable()
    else:
        vision.gradient_checkpointing_disable()


# ---------------------------------------------------------------------------------------------
# One call for the trainer


def wrap_clip(clip: CLIPModel, architecture: str = "alpha_conv") -> RGBAClip:
    """`clip` as the model of `architecture` (ModelConfig.architecture), its mask module at its
    initial value."""
    from fctrain.object_guided import ObjectGuidedClip  # it builds on this module

    classes = {cls.architecture: cls for cls in (RGBAClip, ObjectGuidedClip)}
    if architecture not in classes:
        raise UserError(f"model.architecture {architecture!r}: choose from {', '.join(classes)}")
    return classes[architecture](clip)


def build_model(
    model_config: ModelConfig,
    lora: LoraConfig,
    tiny_dir: Path | None,
    phrases: Iterable[str] | None = None,
    seed: int = 0,
    pretrain: Callable[[CLIPModel, object], None] | None = None,
) -> tuple[RGBAClip, object]:
    """The model ready to train, and its tokenizer: CLIP (or the tiny model, created in `tiny_dir`
    from `phrases` when absent) wrapped as `model_config.architecture` says, LoRA applied, checkpointing/compile per config."""
    source = model_config
    if model_config.name_or_path == "tiny":
        if tiny_dir is None:
            raise UserError("model 'tiny' needs a directory to build it in")
        tiny_dir = Path(tiny_dir)
        if not (tiny_dir / "config.json").is_file():
            if phrases is None:
                raise UserError(f"model 'tiny': {tiny_dir} holds no model and no phrases were given to build one")
            create_tiny_model(tiny_dir, phrases, image_size=model_config.image_size, seed=seed, pretrain=pretrain)
        source = replace(model_config, name_or_path=str(tiny_dir))
    clip, tokenizer = load_clip(source)
    with torch.random.fork_rng(devices=[]):  # object_guided's convs are random: same seed, same start
        torch.manual_seed(seed)
        rgba = wrap_clip(clip, model_config.architecture)
    mask_file = Path(source.name_or_path) / rgba.mask_weights
    if mask_file.is_file():  # an exported or converted (e.g. Alpha-CLIP) model brings its mask module
        rgba.load_mask_module(mask_file)
    with torch.random.fork_rng(devices=[]):  # LoRA's A matrices are random: same seed, same start
        torch.manual_seed(seed)
        model = apply_lora(rgba, lora)
    set_gradient_checkpointing(model, model_config.gradient_checkpointing)
    if model_config.compile:
        compile_vision(model)
    log.info("%s", trainable_summary(model))
    return model, tokenizer
