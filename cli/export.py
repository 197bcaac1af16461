"""`fc export`: a trained run -> a standalone model folder for fctrain.api.FocusClip."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def export(
    run: Annotated[Path, typer.Option(help="A training run folder (from fc train).")],
    out: Annotated[Path, typer.Option(help="Folder to write the model to: new, empty or an earlier export (replaced atomically).")],
    checkpoint: Annotated[str, typer.Option(help="'latest' or a checkpoint folder of the run.")] = "latest",
    overwrite: Annotated[bool, typer.Option(help="Replace --out even if it is not an earlier export (a file, or a folder of other files).")] = False,
) -> None:
    """Merge the LoRA adapters into the weights and write safetensors, config, tokenizer and the
    alpha conv. Load it with `FocusClip.load(path)` (encode_image, encode_text, score).

    Example: fc export --run runs/tiny --out models/focus-tiny
    """
    from fcdata.outputs import check_output_dir
    from fctrain.checkpoint import load_trained
    from fctrain.export import check_export_target, export_model

    check_export_target(out, overwrite)  # before minutes of loading, not after
    check_output_dir(out.parent, f"--out {out}: its folder")
    model, tokenizer, config = load_trained(run, checkpoint)
    path = export_model(model, tokenizer, out, model.image_size, overwrite=overwrite)
    typer.echo(f"exported to {path}; load with fctrain.api.FocusClip.load({str(path)!r})")
