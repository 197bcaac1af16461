"""`fc export`: a trained run -> a standalone model folder for fctrain.api.FocusClip."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def export(
    run: Annotated[Path, typer.Option(help="A training run folder (from fc train).")],
    out: Annotated[Path, typer.Option(help="Folder to write the model to (replaced atomically).")],
    checkpoint: Annotated[str, typer.Option(help="'latest' or a checkpoint folder of the run.")] = "latest",
) -> None:
    """Merge the LoRA adapters into the weights and write safetensors, config, tokenizer and the
    alpha conv. Load it with `FocusClip.load(path)` (encode_image, encode_text, score).

    Example: fc export --run runs/tiny --out models/focus-tiny
    """
    from fctrain.checkpoint import load_trained
    from fctrain.export import export_model

    model, tokenizer, config = load_trained(run, checkpoint)
    path = export_model(model, tokenizer, out, model.image_size)
    typer.echo(f"exported to {path}; load with fctrain.api.FocusClip.load({str(path)!r})")
