"""`fc convert`: OpenAI CLIP / Alpha-CLIP checkpoints -> model directories this project reads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def convert(
    checkpoint: Annotated[Path, typer.Argument(help="The checkpoint: .pt/.pth (state dict or TorchScript) or .safetensors.")],
    out: Annotated[Path, typer.Option("--out", help="Output model directory (replaced whole).")],
    base: Annotated[Optional[Path], typer.Option(help="Alpha-CLIP mode: a Hugging Face CLIP directory for the text tower and tokenizer (e.g. OpenAI CLIP converted by this command).")] = None,
    tokenizer: Annotated[Optional[Path], typer.Option(help="OpenAI mode: a directory holding CLIP's tokenizer, copied into the output.")] = None,
    activation: Annotated[str, typer.Option(help="MLP activation: 'quick_gelu' (OpenAI, Alpha-CLIP) or 'gelu' (open_clip's own trainings).")] = "quick_gelu",
    overwrite: Annotated[bool, typer.Option(help="Replace --out if it exists and is not empty.")] = False,
) -> None:
    """Convert an existing checkpoint into a model directory: OpenAI CLIP (the `clip` package's
    state dict or .pt archive, or an open_clip ViT in that layout) -> a Hugging Face CLIP directory
    for `fc train --model`; an Alpha-CLIP visual checkpoint plus --base -> a Focus-CLIP export
    (with its alpha conv) that fctrain.api.FocusClip.load reads.

    Examples:
      fc convert ViT-B-16.pt --out models/clip-b16 --tokenizer hf/clip-vit-base-patch16
      fc convert clip_b16_grit1m_fultune_8xe.pth --base models/clip-b16 --out models/alpha-clip-b16
    """
    from transformers import CLIPConfig

    from fcdata.errors import UserError
    from fctrain.convert import convert_alpha_clip_checkpoint, convert_openai_checkpoint, describe

    if base is not None and tokenizer is not None:
        raise UserError("--tokenizer is for OpenAI checkpoints; with --base the tokenizer comes from the base model")
    if base is not None:
        written = convert_alpha_clip_checkpoint(checkpoint, base, out, activation=activation, overwrite=overwrite)
        kind = "Alpha-CLIP (vision + alpha conv; text tower and tokenizer from the base) as a Focus-CLIP export"
    else:
        written = convert_openai_checkpoint(checkpoint, out, tokenizer, activation=activation, overwrite=overwrite)
        kind = "OpenAI CLIP as a Hugging Face CLIP directory" + ("" if tokenizer else " (no tokenizer: see the warning)")
    typer.echo(f"wrote {kind} to {written}: {describe(CLIPConfig.from_pretrained(written))}")
