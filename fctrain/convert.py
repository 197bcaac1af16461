"""Convert existing checkpoints into our model: OpenAI CLIP (and open_clip's OpenAI-layout ViTs) to a
Hugging Face CLIP directory, and Alpha-CLIP's released visual checkpoints to an RGBAClip.

    convert_openai_checkpoint("ViT-B-16.pt", "models/clip-b16")            # tokenizer from OpenAI's BPE file
    model = load_alpha_clip_visual("clip_b16_grit1m_fultune_8xe.pth", base_dir="models/clip-b16")
    convert_alpha_clip_checkpoint("clip_b16_grit1m_fultune_8xe.pth", "models/clip-b16", "models/alpha-clip-b16")

The OpenAI layout (`clip.load(...).state_dict()`, or its TorchScript archive):

    visual.conv1.weight                     D x 3 x P x P   -> vision_model.embeddings.patch_embedding
    visual.class_embedding                  D               -> vision_model.embeddings.class_embedding
    visual.positional_embedding             (1 + g*g) x D   -> vision_model.embeddings.position_embedding
    visual.ln_pre / ln_post                                 -> vision_model.pre_layrnorm / post_layernorm
    visual.transformer.resblocks.N.
        attn.in_proj_weight, _bias          3D x D, 3D      -> encoder.layers.N.self_attn.{q,k,v}_proj (rows q, k, v)
        attn.out_proj, ln_1, ln_2           -> self_attn.out_proj, layer_norm1, layer_norm2
        mlp.c_fc, mlp.c_proj                -> mlp.fc1, mlp.fc2
    visual.proj                             D x E (x @ proj) -> visual_projection.weight = proj.T
    token_embedding, positional_embedding, transformer.resblocks.N.*, ln_final, text_projection (W x E)
                                            -> text_model.embeddings.*, text_model.encoder.layers.N.*,
                                               text_model.final_layer_norm, text_projection.weight = .T
    logit_scale                             -> logit_scale

Alpha-CLIP's visual checkpoints are `model.visual.state_dict()`: the visual keys without `visual.`
(or with `module.` from DDP), attention as `attn.in_proj.weight` (its own attention module), plus
`conv1_alpha.weight` (D x 1 x P x P) -> RGBAClip.alpha_embedding. Its LoRA checkpoints add loralib's
`lora_A`/`lora_B`, folded in or dropped as stale (fctrain.lora_fold).

The architecture is read from the tensor shapes; heads are width // 64 (OpenAI's rule; the shapes
cannot tell). OpenAI CLIP's MLP uses QuickGELU; open_clip models trained with plain GELU share the
layout, so the activation is read from a TorchScript archive or must be given (`choose_activation`).
Weights are written in float32 (OpenAI's fp16 converts exactly). Each conversion returns notes on
what it found and chose, which `fc convert` prints.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig, CLIPVisionModelWithProjection

from fcdata.errors import UserError
from fctrain.export import export_model
from fctrain.lora_fold import STATES, lora_state, pop_lora_deltas
from fcdata.outputs import write_directory_atomically
from fctrain.model import RGBAClip, check_text_pooling, load_clip
from fctrain.tokenizer import load_tokenizer

log = logging.getLogger("fc")

WEIGHTS = "model.safetensors"  # transformers' file name for unsharded safetensors weights
ACTIVATIONS = ("quick_gelu", "gelu")
# Plain numbers stored as tensors in OpenAI's TorchScript archives; not weights.
_JIT_EXTRAS = ("input_resolution", "context_length", "vocab_size")
_TOP_VISUAL = ("conv1.weight", "class_embedding", "positional_embedding", "ln_pre.weight", "ln_pre.bias",
               "ln_post.weight", "ln_post.bias", "proj")
_TOP_TEXT = ("token_embedding.weight", "positional_embedding", "ln_final.weight", "ln_final.bias",
             "text_projection", "logit_scale")
# One residual block, OpenAI name -> HF name (weight and bias each); attn.in_proj is split apart.
_BLOCK = {"attn.out_proj": "self_attn.out_proj", "ln_1": "layer_norm1", "ln_2": "layer_norm2",
          "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}


# ---------------------------------------------------------------------------------------------
# Reading checkpoint files


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a .pt/.pth (a state dict, one nested under "state_dict"/"model", or a
    TorchScript archive) or a .safetensors file, on the CPU, keys as saved.

    Pickles are read with weights_only=True: a file that needs arbitrary Python objects to load is
    refused rather than executed.
    """
    return read_checkpoint(path)[0]


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], str | None]:
    """`read_state_dict`, plus the MLP activation where the file tells it (a TorchScript archive
    keeps its modules' class names: QuickGELU or GELU), else None."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found" if not path.exists() else f"checkpoint {path} is not a file")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path)), None
        except (SafetensorError, OSError) as exc:
            raise UserError(f"{path}: not a readable safetensors file ({exc})".splitlines()[0]) from exc
    if _is_torchscript(path):
        try:
            with warnings.catch_warnings():  # deprecated in torch 2.x, yet the only reader of OpenAI's .pt archives
                for category in (DeprecationWarning, FutureWarning):  # the category differs between torch versions
                    warnings.filterwarnings("ignore", message=r".*torch\.jit\.load", category=category)
                archive = torch.jit.load(str(path), map_location="cpu")
            return dict(archive.state_dict()), _scripted_activation(archive)
        except RuntimeError as exc:
            raise UserError(f"{path}: cannot read the TorchScript archive ({exc})".splitlines()[0]) from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types for a bad or unsafe file
        raise UserError(
            f"{path}: cannot read it as a PyTorch checkpoint of plain tensors ({type(exc).__name__}: {exc}); "
            f"re-save it as torch.save(model.state_dict()) or as .safetensors".splitlines()[0]
        ) from exc
    return _unwrap(obj, path), None


def _scripted_activation(archive) -> str | None:
    """quick_gelu or gelu from the class names of a TorchScript archive's modules; None if neither or both."""
    names = {module.original_name for _, module in archive.named_modules()}
    found = [activation for activation, name in (("quick_gelu", "QuickGELU"), ("gelu", "GELU")) if name in names]
    return found[0] if len(found) == 1 else None


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files holding constants.pkl; torch.save zips hold data.pkl only."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


def _unwrap(obj, path: Path) -> dict[str, torch.Tensor]:
    """The state dict inside a loaded object: itself, or under "state_dict"/"model" (training
    checkpoints of open_clip and others), at most two levels down."""
    for _ in range(3):
        if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        if not isinstance(obj, Mapping):
            break
        inner = next((obj[k] for k in ("state_dict", "model") if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    keys = list(obj)[:6] if isinstance(obj, Mapping) else type(obj).__name__
    raise UserError(f"{path}: no state dict of tensors found (top level: {keys})")


def strip_wrappers(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove wrapper path components (`module.` of DDP/DataParallel, on the whole model or on
    `visual`; `_orig_mod.` of torch.compile), OpenAI's TorchScript extras (input_resolution,
    context_length, vocab_size) and causal `attn_mask` buffers (the HF text tower builds its own)."""
    out = {re.sub(r"(^|\.)(module|_orig_mod)\.", r"\1", k): v for k, v in state_dict.items()}
    for key in _JIT_EXTRAS:
        out.pop(key, None)
    for key in [k for k in out if k == "attn_mask" or k.endswith(".attn_mask")]:
        _check_causal(key, out.pop(key))
    return out


def _check_causal(key: str, mask: torch.Tensor) -> None:
    """A saved attention mask must be CLIP's causal one (0 on and below the diagonal, -inf above):
    HF's CLIP text tower applies exactly that, and no other."""
    square = mask.ndim == 2 and mask.shape[0] == mask.shape[1]
    causal = torch.full(mask.shape, float("-inf")).triu(1) if square else None
    if causal is None or not torch.equal(mask.float(), causal):
        raise UserError(f"{key}: an attention mask {tuple(mask.shape)} that is not CLIP's causal text mask; "
                        f"this converter maps only CLIP's architecture")


# ---------------------------------------------------------------------------------------------
# OpenAI layout -> Hugging Face CLIPModel keys


def openai_to_hf(
    state_dict: Mapping[str, torch.Tensor], *, activation: str,
) -> tuple[CLIPConfig, dict[str, torch.Tensor]]:
    """An OpenAI-layout CLIP ViT state dict -> (CLIPConfig read from its shapes, CLIPModel state dict
    in float32). `module.` prefixes and TorchScript extras are allowed; anything else unknown,
    missing or of the wrong shape is a UserError naming the key."""
    if activation not in ACTIVATIONS:
        raise UserError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    sd = strip_wrappers(state_dict)
    _check_layout(sd, [f"visual.{k}" for k in _TOP_VISUAL] + list(_TOP_TEXT), "an OpenAI-layout CLIP ViT")
    if "visual.conv1_alpha.weight" in sd:
        raise UserError("this is an Alpha-CLIP checkpoint (it has visual.conv1_alpha.weight): convert it as one, "
                        "with a base model for the text tower (fc convert --base DIR)")
    origin: dict[str, str] = {}
    vision, out = _vision_to_hf(sd, "visual.", activation, origin)
    text, text_out = _text_to_hf(sd, activation, origin)
    out.update(text_out)
    _reject_leftovers(sd, "the checkpoint", lora_hint="only Alpha-CLIP's LoRA (convert it with --base) is folded")
    embed = out["visual_projection.weight"].shape[0]
    if out["text_projection.weight"].shape[0] != embed:
        raise UserError(f"visual.proj projects to {embed} dims but text_projection to "
                        f"{out['text_projection.weight'].shape[0]}: not one CLIP model")
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=embed,
                        logit_scale_init_value=float(out["logit_scale"]))
    config.architectures = ["CLIPModel"]
    config.dtype = torch.float32  # what the weights are written in
    _check_fits(CLIPModel, config, out, origin)
    return config, {k: _float32(v) for k, v in out.items()}


def _vision_to_hf(sd: dict, prefix: str, activation: str, origin: dict[str, str]) -> tuple[dict, dict]:
    """Pop the vision tower's keys (under `prefix`) from `sd`: (CLIPVisionConfig fields, HF tensors)."""
    conv = sd[f"{prefix}conv1.weight"]
    if conv.ndim != 4 or conv.shape[1] != 3 or conv.shape[2] != conv.shape[3]:
        raise UserError(f"{prefix}conv1.weight has shape {tuple(conv.shape)}; expected width x 3 x patch x patch")
    width, patch = conv.shape[0], conv.shape[-1]
    positions = sd[f"{prefix}positional_embedding"]
    grid = math.isqrt(positions.shape[0] - 1) if positions.ndim == 2 and positions.shape[0] > 1 else 0
    if grid < 1 or grid * grid + 1 != positions.shape[0]:
        raise UserError(f"{prefix}positional_embedding has shape {tuple(positions.shape)}; "
                        f"expected (1 + grid^2) x {width}")
    proj = sd[f"{prefix}proj"]
    if proj.ndim != 2 or proj.shape[0] != width:
        raise UserError(f"{prefix}proj has shape {tuple(proj.shape)}; expected {width} x embed_dim")
    out = {}
    for src, dst in (("conv1.weight", "embeddings.patch_embedding.weight"),
                     ("class_embedding", "embeddings.class_embedding"),
                     ("positional_embedding", "embeddings.position_embedding.weight"),
                     ("ln_pre.weight", "pre_layrnorm.weight"), ("ln_pre.bias", "pre_layrnorm.bias"),
                     ("ln_post.weight", "post_layernorm.weight"), ("ln_post.bias", "post_layernorm.bias")):
        out[f"vision_model.{dst}"] = sd.pop(prefix + src)
        origin[f"vision_model.{dst}"] = prefix + src
    out["visual_projection.weight"] = sd.pop(f"{prefix}proj").T  # x @ proj == Linear with weight proj.T
    origin["visual_projection.weight"] = f"{prefix}proj"
    layers, blocks = _blocks_to_hf(sd, f"{prefix}transformer.resblocks.", "vision_model.encoder.layers.", origin)
    out.update(blocks)
    config = dict(
        hidden_size=width, intermediate_size=blocks["vision_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
        num_hidden_layers=layers, num_attention_heads=_heads(width, f"{prefix}conv1.weight"),
        image_size=grid * patch, patch_size=patch, projection_dim=proj.shape[1], hidden_act=activation,
    )
    return config, out


def _text_to_hf(sd: dict, activation: str, origin: dict[str, str]) -> tuple[dict, dict]:
    """Pop the text tower's keys from `sd`: (CLIPTextConfig fields, HF tensors)."""
    tokens, positions = sd["token_embedding.weight"], sd["positional_embedding"]
    width = sd["ln_final.weight"].shape[0]
    projection = sd["text_projection"]
    for key, tensor, expected in (("token_embedding.weight", tokens, "vocab x width"),
                                  ("positional_embedding", positions, "context x width"),
                                  ("text_projection", projection, "width x embed_dim")):
        width_dim = 0 if key == "text_projection" else 1
        if tensor.ndim != 2 or tensor.shape[width_dim] != width:
            raise UserError(f"{key} has shape {tuple(tensor.shape)}; expected {expected} "
                            f"with width {width} (ln_final.weight)")
    out = {}
    for src, dst in (("token_embedding.weight", "text_model.embeddings.token_embedding.weight"),
                     ("positional_embedding", "text_model.embeddings.position_embedding.weight"),
                     ("ln_final.weight", "text_model.final_layer_norm.weight"),
                     ("ln_final.bias", "text_model.final_layer_norm.bias"),
                     ("logit_scale", "logit_scale")):
        out[dst] = sd.pop(src)
        origin[dst] = src
    out["text_projection.weight"] = sd.pop("text_projection").T
    origin["text_projection.weight"] = "text_projection"
    layers, blocks = _blocks_to_hf(sd, "transformer.resblocks.", "text_model.encoder.layers.", origin)
    out.update(blocks)
    vocab = tokens.shape[0]
    config = dict(
        vocab_size=vocab, hidden_size=width,
        intermediate_size=blocks["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
        num_hidden_layers=layers, num_attention_heads=_heads(width, "ln_final.weight"),
        max_position_embeddings=positions.shape[0], projection_dim=projection.shape[1], hidden_act=activation,
        # CLIP's vocabulary ends with <|startoftext|>, <|endoftext|>; OpenAI pools at the largest id,
        # which HF reproduces by pooling at the first end token (and it pads with the end token).
        bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1,
    )
    return config, out


def _blocks_to_hf(sd: dict, src: str, dst: str, origin: dict[str, str]) -> tuple[int, dict]:
    """Pop residual blocks `src`N.* from `sd` -> (number of blocks, HF encoder-layer tensors)."""
    pattern = re.compile(re.escape(src) + r"(\d+)\.")
    indices = sorted({int(m.group(1)) for k in sd if (m := pattern.match(k))})
    if not indices:
        raise UserError(f"no residual blocks: missing {src}0.attn.in_proj_weight and the rest of {src}N.*")
    if indices != list(range(len(indices))):
        raise UserError(f"blocks {src}N are numbered {indices[:8]}; expected 0..{len(indices) - 1}")
    out, missing = {}, []
    for i in indices:
        s, d = f"{src}{i}.", f"{dst}{i}."
        for kind in ("weight", "bias"):
            # q, k and v are fused, rows in that order; Alpha-CLIP's attention module names it in_proj.weight.
            key = next((k for k in (f"{s}attn.in_proj_{kind}", f"{s}attn.in_proj.{kind}") if k in sd), None)
            if key is None:
                missing.append(f"{s}attn.in_proj_{kind}")
                continue
            fused = sd.pop(key)
            if fused.shape[0] % 3:
                raise UserError(f"{key} has shape {tuple(fused.shape)}; its first dim should be 3 x width (q, k, v)")
            for name, part in zip("qkv", fused.chunk(3, dim=0)):
                out[f"{d}self_attn.{name}_proj.{kind}"] = part
                origin[f"{d}self_attn.{name}_proj.{kind}"] = key
            for a, b in _BLOCK.items():
                if f"{s}{a}.{kind}" not in sd:
                    missing.append(f"{s}{a}.{kind}")
                    continue
                out[f"{d}{b}.{kind}"] = sd.pop(f"{s}{a}.{kind}")
                origin[f"{d}{b}.{kind}"] = f"{s}{a}.{kind}"
    if missing:
        more = " ..." if len(missing) > 4 else ""
        raise UserError(f"missing {len(missing)} block tensor(s): {', '.join(missing[:4])}{more}")
    return len(indices), out


def _heads(width: int, key: str) -> int:
    if width % 64:
        raise UserError(f"{key}: width {width} is not a multiple of 64, so the number of heads "
                        f"(OpenAI's rule: width // 64) cannot be inferred")
    return width // 64


def _check_layout(sd: Mapping, required: Iterable[str], what: str) -> None:
    missing = [k for k in required if k not in sd]
    if not missing:
        return
    keys = sorted(sd)
    hint = ""
    if any(k.startswith(("vision_model.", "text_model.")) for k in keys):
        hint = "; it looks like a Hugging Face CLIP checkpoint already (load its directory directly)"
    elif any(re.match(r"(visual\.)?layer1\.", k) for k in keys):
        hint = "; ResNet CLIP (RN50...) is not supported, only ViT"
    elif "visual.conv1.weight" in missing and "conv1_alpha.weight" in sd:
        hint = "; it looks like an Alpha-CLIP visual checkpoint: convert it with a base model (fc convert --base DIR)"
    elif "visual.conv1.weight" in missing and "conv1.weight" in sd:
        hint = "; it looks like a vision tower alone (keys without visual.)"
    raise UserError(f"not {what}: missing {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''} "
                    f"(its keys begin {keys[:3]}){hint}")


def _reject_leftovers(sd: Mapping, what: str, lora_hint: str = "") -> None:
    if not sd:
        return
    keys = sorted(sd)
    lora = [k for k in keys if "lora_" in k]
    if lora:
        raise UserError(f"{what} holds LoRA tensors this converter does not know ({lora[0]} ...); {lora_hint}")
    raise UserError(f"{what} has {len(keys)} tensor(s) this converter does not know: {', '.join(keys[:5])}"
                    f"{' ...' if len(keys) > 5 else ''}")


def _check_fits(model_class, config, tensors: Mapping[str, torch.Tensor], origin: Mapping[str, str]) -> None:
    """Compare names and shapes with `model_class(config)` built on the meta device (no memory)."""
    with torch.device("meta"):
        expected = {k: v.shape for k, v in model_class(config).state_dict().items()}
    missing = sorted(set(expected) - set(tensors))
    if missing:  # a bug here, not in the file: every key is produced from the config
        raise RuntimeError(f"conversion left {model_class.__name__} keys unset: {missing[:4]}")
    for key, tensor in tensors.items():
        if key not in expected:
            raise RuntimeError(f"conversion produced an unknown {model_class.__name__} key {key}")
        if tensor.shape != expected[key]:
            raise UserError(f"{origin.get(key, key)} has shape {tuple(tensor.shape)}; the model read from the other "
                            f"shapes needs {tuple(expected[key])} for {key}")


def _float32(tensor: torch.Tensor) -> torch.Tensor:
    """An own, contiguous float32 copy: safetensors refuses views that share memory (q, k, v)."""
    return tensor.detach().to(torch.float32, memory_format=torch.contiguous_format, copy=True)


# ---------------------------------------------------------------------------------------------
# Writing a Hugging Face CLIP directory


@dataclass
class Converted:
    """What a conversion wrote, and what it found or chose on the way (one line each, for the user)."""

    out_dir: Path
    notes: list[str] = field(default_factory=list)


def choose_activation(given: str | None, detected: str | None, path: Path) -> tuple[str, str]:
    """(activation, a note saying where it came from) for an OpenAI-layout checkpoint. OpenAI CLIP
    and open_clip's GELU models share the layout and differ only in the MLP's activation, which a
    state dict does not record: a guess would give a subtly different model (cosine ~0.9999 on
    random weights), so unless the file tells (`detected`), the user must say."""
    if given is not None:
        if given not in ACTIVATIONS:
            raise UserError(f"activation must be one of {ACTIVATIONS}, got {given!r}")
        if detected is not None and detected != given:
            raise UserError(f"--activation {given}, but the modules of the TorchScript archive {path} use {detected}")
        return given, f"MLP activation {given} (as given)"
    if detected is None:
        raise UserError(
            f"cannot tell the MLP activation of {path}: OpenAI CLIP and open_clip models share this layout and a "
            f"state dict does not record it. Pass --activation quick_gelu (OpenAI's CLIP, open_clip's *-quickgelu "
            f"models) or --activation gelu (open_clip's other models, e.g. ViT-B-16 trained on LAION)"
        )
    return detected, f"MLP activation {detected} (detected from the TorchScript archive's modules)"


def convert_openai_checkpoint(
    path: str | Path, out_dir: str | Path, tokenizer_dir: str | Path | None = None, *,
    bpe: str | Path | None = None, activation: str | None = None, overwrite: bool = False,
) -> Converted:
    """Write an OpenAI-layout CLIP checkpoint as a Hugging Face CLIP directory (config.json,
    model.safetensors and CLIP's tokenizer) that fctrain.model.load_clip, `fc train` and
    `CLIPModel.from_pretrained` read.

    The tokenizer is copied from `tokenizer_dir`, else built from OpenAI's BPE file `bpe`, else
    from the one an installed open_clip / clip / Alpha-CLIP package ships; with none of these the
    weights are still written, with a warning. It must be CLIP's (its end token the largest id, as
    OpenAI pools there); the text config takes its bos/eos/pad ids. `activation` (quick_gelu or
    gelu) is required unless the file tells it (TorchScript archives do). `out_dir` is replaced
    whole, atomically; a non-empty one only with `overwrite`.
    """
    from fctrain.clip_tokenizer import VOCAB_SIZE, build_clip_tokenizer, find_bpe_vocab

    if tokenizer_dir is not None and bpe is not None:
        raise UserError("give a tokenizer directory (--tokenizer) or a BPE file (--bpe), not both")
    path, out_dir = Path(path).expanduser(), Path(out_dir).expanduser()
    sources = [path] + [Path(x).expanduser() for x in (tokenizer_dir, bpe) if x is not None]
    _check_out_dir(out_dir, sources, overwrite)
    state_dict, detected = read_checkpoint(path)
    activation, note = choose_activation(activation, detected, path)
    config, tensors = openai_to_hf(state_dict, activation=activation)
    notes = [note]
    tokenizer = None
    if tokenizer_dir is not None:
        tokenizer = _load_tokenizer(Path(tokenizer_dir).expanduser())
        notes.append(f"tokenizer copied from {tokenizer_dir}")
    elif bpe is not None:
        tokenizer = build_clip_tokenizer(bpe)
        notes.append(f"tokenizer built from the BPE file {bpe}")
    elif (found := find_bpe_vocab()) is not None and config.text_config.vocab_size == VOCAB_SIZE:
        tokenizer = build_clip_tokenizer(found)
        notes.append(f"tokenizer built from the BPE file of an installed package: {found}")
    if tokenizer is not None:
        _adopt_token_ids(config, tokenizer, str(tokenizer_dir or bpe or found))
    with write_directory_atomically(out_dir) as tmp:
        config.save_pretrained(tmp)
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    if tokenizer is None:
        log.warning(
            "%s: weights and config written WITHOUT a tokenizer (none given, and no BPE file of an installed "
            "open_clip/clip package fits its %d-token vocabulary). Rerun with --tokenizer DIR or --bpe "
            "bpe_simple_vocab_16e6.txt.gz before training or loading it with fctrain.model.load_clip.",
            out_dir, config.text_config.vocab_size,
        )
        notes.append("no tokenizer (see the warning)")
    return Converted(out_dir, notes)


def _check_out_dir(out_dir: Path, sources: Iterable[Path], overwrite: bool) -> None:
    """Refuse to replace a directory that holds an input, or a non-empty one without `overwrite`."""
    target = out_dir.resolve()
    for source in sources:
        resolved = source.resolve()
        if resolved == target or target in resolved.parents:
            raise UserError(f"output {out_dir} would replace its own input {source}; choose another --out")
    if out_dir.exists():
        if not out_dir.is_dir():
            raise UserError(f"output {out_dir} exists and is not a directory")
        if any(out_dir.iterdir()) and not overwrite:
            raise UserError(f"output {out_dir} exists and is not empty; pass --overwrite to replace it whole")


def _load_tokenizer(directory: Path):
    if not directory.is_dir():
        raise UserError(f"tokenizer directory {directory} not found")
    return load_tokenizer(directory, f"tokenizer directory {directory}")


def _adopt_token_ids(config: CLIPConfig, tokenizer, source: str) -> None:
    """Take the tokenizer's special ids into the text config after checking it fits the checkpoint."""
    text = config.text_config
    size, eos = len(tokenizer), tokenizer.eos_token_id
    if size > text.vocab_size:
        raise UserError(f"tokenizer {source} has {size} tokens, the checkpoint's text tower {text.vocab_size}")
    if eos is None or eos != size - 1:
        raise UserError(f"tokenizer {source}: its end token {eos} is not its largest id {size - 1}; OpenAI CLIP "
                        f"pools each caption at the largest id (CLIP's <|endoftext|>): is this CLIP's tokenizer?")
    if tokenizer.model_max_length > text.max_position_embeddings:
        raise UserError(f"tokenizer {source} allows {tokenizer.model_max_length} tokens, the text tower "
                        f"{text.max_position_embeddings}; set model_max_length in its tokenizer_config.json")
    text.eos_token_id = eos
    text.bos_token_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else text.bos_token_id
    text.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else text.pad_token_id
    check_text_pooling(text, tokenizer)


# ---------------------------------------------------------------------------------------------
# Alpha-CLIP visual checkpoints -> RGBAClip


def load_alpha_clip_visual(
    path: str | Path, base_dir: str | Path, *, activation: str | None = None, lora: str = "auto", lora_alpha: float = 1.0,
) -> RGBAClip:
    """An RGBAClip whose vision tower and alpha conv come from an Alpha-CLIP visual checkpoint and
    whose text tower, logit scale (and, via `convert_alpha_clip_checkpoint`, tokenizer) come from
    `base_dir`, a Hugging Face CLIP directory (e.g. OpenAI CLIP converted with
    `convert_openai_checkpoint`). In eval mode, float32, LoRA folded in (see `alpha_clip_visual_to_hf`)."""
    return _alpha_clip_and_tokenizer(path, base_dir, activation, lora, lora_alpha)[0]


def convert_alpha_clip_checkpoint(
    path: str | Path, base_dir: str | Path, out_dir: str | Path, *,
    activation: str | None = None, lora: str = "auto", lora_alpha: float = 1.0, overwrite: bool = False,
) -> Converted:
    """`load_alpha_clip_visual`, written with fctrain.export.export_model: a directory that
    fctrain.api.FocusClip.load reads (and CLIPModel.from_pretrained, as RGB-only CLIP)."""
    path, base_dir, out_dir = Path(path).expanduser(), Path(base_dir).expanduser(), Path(out_dir).expanduser()
    _check_out_dir(out_dir, [path, base_dir], overwrite)
    model, tokenizer, notes = _alpha_clip_and_tokenizer(path, base_dir, activation, lora, lora_alpha)
    return Converted(export_model(model, tokenizer, out_dir, image_size=model.image_size), notes)


# What each LoRA case did to the weights, told to the user.
LORA_NOTES = {
    "none": "no LoRA tensors",
    "zero": "LoRA on {layers} layers, all factors zero (as initialised): nothing to fold",
    "unmerged": "LoRA on {layers} layers found UNMERGED (saved in train mode): B @ A x {scaling} folded into the weights",
    "merged": "LoRA on {layers} layers found MERGED (saved after model.eval()): weights kept as saved, "
              "the stale lora_A/lora_B dropped",
}


def alpha_clip_visual_to_hf(
    state_dict: Mapping[str, torch.Tensor], *, activation: str = "quick_gelu",
    base: Mapping[str, torch.Tensor] | None = None, lora: str = "auto", lora_alpha: float = 1.0,
) -> tuple[dict, dict[str, torch.Tensor], torch.Tensor, str]:
    """An Alpha-CLIP visual state dict (keys bare, or under `visual.` with any text-tower keys then
    ignored; `module.` allowed) -> (CLIPVisionConfig fields, HF vision tensors incl.
    visual_projection.weight, the alpha conv weight D x 1 x P x P, float32; a line saying which
    LoRA case was found: none, all zero, merged or unmerged).

    LoRA factors (fctrain.lora_fold) are folded into their weights (`lora="unmerged"`) or dropped as
    stale (`"merged"`); `"auto"` tells the two apart against `base`, the base CLIP's HF tensors.
    """
    if activation not in ACTIVATIONS:
        raise UserError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if lora not in STATES:
        raise UserError(f"lora must be one of {STATES}, got {lora!r}")
    sd = strip_wrappers(state_dict)
    if any(k.startswith("visual.") for k in sd):
        ignored = sum(not k.startswith("visual.") for k in sd)
        if ignored:
            log.info("Alpha-CLIP checkpoint: %d non-visual tensors ignored (the text tower comes from the base model)",
                     ignored)
        sd = {k.removeprefix("visual."): v for k, v in sd.items() if k.startswith("visual.")}
    _check_layout(sd, list(_TOP_VISUAL) + ["conv1_alpha.weight"], "an Alpha-CLIP visual checkpoint")
    ranks = sorted({v.shape[-1] for k, v in sd.items() if k.endswith(".lora_B")})
    deltas = pop_lora_deltas(sd, lora_alpha)
    origin: dict[str, str] = {}
    alpha = sd.pop("conv1_alpha.weight")
    vision, tensors = _vision_to_hf(sd, "", activation, origin)
    _reject_leftovers(sd, "the Alpha-CLIP checkpoint")
    _check_fits(CLIPVisionModelWithProjection, CLIPVisionConfig(**vision), tensors, origin)
    width, patch = vision["hidden_size"], vision["patch_size"]
    if tuple(alpha.shape) != (width, 1, patch, patch):
        raise UserError(f"conv1_alpha.weight has shape {tuple(alpha.shape)}; "
                        f"the vision tower needs {(width, 1, patch, patch)}")
    tensors = {k: _float32(v) for k, v in tensors.items()}
    found = "none"
    if deltas:
        hf_deltas = _deltas_to_hf(deltas, origin)
        if lora != "auto":
            found = lora
        elif base is None:
            raise UserError("the checkpoint holds LoRA factors: say whether they are merged (--lora merged|unmerged), "
                            "or give the base model to tell")
        else:
            found = lora_state(tensors, hf_deltas, base)
        if found == "unmerged":
            for key, delta in hf_deltas.items():
                tensors[key] += delta
    note = LORA_NOTES[found].format(layers=len(deltas), scaling=f"lora_alpha / r = {lora_alpha:g} / {', '.join(map(str, ranks))}")
    if deltas and lora != "auto":
        note = note.replace(" found ", " taken as ", 1)
    return vision, tensors, _float32(alpha), note


def _deltas_to_hf(deltas: Mapping[str, torch.Tensor], origin: Mapping[str, str]) -> dict[str, torch.Tensor]:
    """LoRA deltas by Alpha-CLIP weight key -> by HF key (in_proj's split into q, k, v rows)."""
    out = {}
    for hf_key, source in origin.items():
        if source in deltas:
            delta = deltas[source]
            out[hf_key] = delta.chunk(3, dim=0)["qkv".index(hf_key.split(".")[-2][0])] if "in_proj" in source else delta
    return out


def _alpha_clip_and_tokenizer(path, base_dir, activation: str | None, lora: str, lora_alpha: float):
    """(RGBAClip, the base's tokenizer, notes)."""
    note = f"MLP activation {activation} (as given)"
    if activation is None:
        activation, note = "quick_gelu", "MLP activation quick_gelu (Alpha-CLIP's model code always uses QuickGELU)"
    base, tokenizer = load_clip(base_dir)
    base_tensors = {k: v for k, v in base.state_dict().items() if k.startswith(("vision_model.", "visual_projection."))}
    vision, tensors, alpha, lora_note = alpha_clip_visual_to_hf(
        read_state_dict(path), activation=activation, base=base_tensors, lora=lora, lora_alpha=lora_alpha)
    embed = base.text_projection.weight.shape[0]
    if vision["projection_dim"] != embed:
        raise UserError(f"{path}: proj projects to {vision['projection_dim']} dims but the text tower of {base_dir} "
                        f"to {embed}: they are not one CLIP model")
    config = CLIPConfig(text_config=base.config.text_config.to_dict(), vision_config=vision, projection_dim=embed,
                        logit_scale_init_value=base.logit_scale.item())
    config.architectures = ["CLIPModel"]
    text = {k: v for k, v in base.state_dict().items()
            if k.startswith(("text_model.", "text_projection.", "logit_scale"))}
    _check_fits(CLIPModel, config, tensors | text, {})  # the vision part was checked on reading
    del base, base_tensors
    clip = CLIPModel(config)  # random init (~1 s for ViT-B/16), every tensor then overwritten
    clip.load_state_dict(tensors | text, strict=True)
    model = RGBAClip(clip)
    with torch.no_grad():
        model.alpha_embedding.weight.copy_(alpha)
    return model.eval(), tokenizer, [note, lora_note]


def describe(config: CLIPConfig) -> str:
    """One line on an architecture: 'ViT width 768 x 12 layers, patch 16, 224 px; text width 512 x 12
    layers, vocab 49408, 77 tokens; embed 512'."""
    v, t = config.vision_config, config.text_config
    return (f"ViT width {v.hidden_size} x {v.num_hidden_layers} layers, patch {v.patch_size}, {v.image_size} px; "
            f"text width {t.hidden_size} x {t.num_hidden_layers} layers, vocab {t.vocab_size}, "
            f"{t.max_position_embeddings} tokens; embed {config.projection_dim}")
