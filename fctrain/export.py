"""Export a trained model as one standalone directory that `fctrain.api.FocusClip.load` reads.

Layout (no peft files: LoRA is merged into the base weights):

    config.json, model.safetensors     the merged CLIPModel (transformers save_pretrained)
    tokenizer.json, tokenizer_config.json, ...
    alpha_embedding.safetensors        {"weight": D x 1 x P x P}  (architecture "alpha_conv")
    object_guided.safetensors          the guide's state_dict     (architecture "object_guided")
    focus_clip.json                    format version, architecture, image size, input normalisation

The CLIP part loads with plain `transformers.CLIPModel.from_pretrained` too (as RGB-only CLIP).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from transformers import CLIPModel

from fcdata.errors import UserError

from fcdata.transforms import ALPHA_MEAN, ALPHA_STD, CLIP_MEAN, CLIP_STD
from fcdata.outputs import write_directory_atomically
from fctrain.model import RGBAClip

METADATA = "focus_clip.json"
FORMAT = "focus-clip"
FORMAT_VERSION = 1  # bump when the layout or the meaning of a field changes


def check_export_target(out_dir: Path, overwrite: bool = False) -> None:
    """Refuse to replace anything but an earlier export holding only what the export wrote (or
    nothing, or a missing path), unless `overwrite`: export replaces `out_dir` whole."""
    out_dir = Path(out_dir)
    if overwrite or not (out_dir.exists() or out_dir.is_symlink()):
        return
    if not out_dir.is_dir() or out_dir.is_symlink():
        raise UserError(f"--out {out_dir} exists and is not a directory; pass --overwrite to replace it")
    present = {str(p.relative_to(out_dir)) for p in out_dir.rglob("*") if not p.is_dir()}
    if not present:
        return
    try:
        metadata = json.loads((out_dir / METADATA).read_text())
    except (OSError, ValueError):
        metadata = None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise UserError(
            f"--out {out_dir} is not empty and is not a Focus-CLIP export; choose another folder "
            "or pass --overwrite to replace it whole"
        )
    written = set(metadata.get("files", present))
    foreign = sorted(present - written)
    if foreign:
        raise UserError(
            f"--out {out_dir} is an earlier export but also holds {foreign[0]}"
            + (f" and {len(foreign) - 1} more files" if len(foreign) > 1 else "")
            + " that the export did not write; move them, or pass --overwrite to replace the folder whole"
        )


def export_model(model: RGBAClip, tokenizer, out_dir: Path, image_size: int, overwrite: bool = False) -> Path:
    """Write `model` (LoRA merged) and `tokenizer` to `out_dir`, replacing it whole (see
    check_export_target); the training model is left untouched. Nothing is left half-written if
    this fails or is interrupted."""
    model_size = model.image_size
    if image_size != model_size:
        raise ValueError(f"export image_size {image_size} differs from the model's {model_size}")
    out_dir = Path(out_dir)
    check_export_target(out_dir, overwrite)
    with write_directory_atomically(out_dir) as tmp:
        merged_clip(model).save_pretrained(tmp)  # safetensors
        tokenizer.save_pretrained(tmp)
        model.save_mask_module(tmp / model.mask_weights)
        metadata = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "image_size": image_size,
            "patch_size": model.base_clip.config.vision_config.patch_size,
            # Inputs: letterbox (zero-pad to square, resize), then these (fcdata.transforms).
            "preprocess": "letterbox",
            "image_mean": list(CLIP_MEAN),
            "image_std": list(CLIP_STD),
            "alpha_mean": ALPHA_MEAN,
            "alpha_std": ALPHA_STD,
            "architecture": model.architecture,  # absent in older exports: alpha_conv
            # "alpha_weights" is the older exports' name for the mask module's file.
            ("alpha_weights" if model.architecture == "alpha_conv" else "mask_weights"): model.mask_weights,
        }
        # What this export wrote: a later export into the same folder replaces only these.
        metadata["files"] = sorted([str(p.relative_to(tmp)) for p in tmp.rglob("*") if not p.is_dir()] + [METADATA])
        (tmp / METADATA).write_text(json.dumps(metadata, indent=2) + "\n")
    return out_dir


def merged_clip(model: RGBAClip) -> CLIPModel:
    """A CLIPModel with the LoRA updates folded into its weights: a copy when LoRA is applied (the
    training model keeps its adapters), the model's own CLIPModel otherwise."""
    if model.peft_model is None:
        return model.clip
    # A deep copy costs one model's memory for a moment (~0.6 GB for ViT-B/16) but leaves the
    # training model exactly as it was; merging in place and unmerging would not be bit-exact.
    return copy.deepcopy(model.peft_model).merge_and_unload(safe_merge=True)
