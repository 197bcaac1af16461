"""What every benchmark report shares: the model description, options checks, the progress
protocol and the atomic JSON write."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Protocol

from fcdata.errors import UserError


class EvalProgress(Protocol):
    """Implemented by the CLI's progress bar; the library only calls these."""

    def start(self, total: int, what: str) -> None: ...
    def advance(self, count: int) -> None: ...


class NoProgress:
    def start(self, total: int, what: str) -> None:
        pass

    def advance(self, count: int) -> None:
        pass


def check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def write_json_atomically(path: Path, data: dict) -> Path:
    """`data` as indented JSON at `path`, written to a temporary name and renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    temporary.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(temporary, path)
    return path


def load_eval_model(path: Path, device: str = "cpu"):
    """(RGBAClip in eval mode, tokenizer, a note on what its baseline rows mean) from `path`: a
    Focus-CLIP export (fc export, or an Alpha-CLIP checkpoint through fc convert) or a Hugging Face
    CLIP directory (plain CLIP, alpha conv zero)."""
    import torch

    from fctrain.export import METADATA
    from fctrain.model import RGBAClip, load_clip

    path = Path(path)
    if not path.is_dir():
        raise UserError(f"--model {path}: no such folder")
    if (path / METADATA).is_file():
        from fctrain.api import FocusClip

        loaded = FocusClip.load(path, device)
        note = f"export {path}: baseline rows run on its own RGB weights with the alpha off (plain CLIP only if it is CLIP)"
        return loaded.model.float().eval(), loaded.tokenizer, note
    if not (path / "config.json").is_file():
        raise UserError(f"--model {path}: neither a Focus-CLIP export ({METADATA}) nor a Hugging Face CLIP folder (config.json)")
    clip, tokenizer = load_clip(path)
    model = RGBAClip(clip).to(torch.device(device)).eval()
    return model, tokenizer, f"plain CLIP {path}: alpha rows equal CLIP (its alpha conv is zero)"
