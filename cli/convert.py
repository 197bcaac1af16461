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
    bpe: Annotated[Optional[Path], typer.Option(help="OpenAI mode: OpenAI's bpe_simple_vocab_16e6.txt.gz to build CLIP's tokenizer from (default: the one an installed open_clip/clip package ships).")] = None,
    activation: Annotated[Optional[str], typer.Option(help="MLP activation: 'quick_gelu' (OpenAI, Alpha-CLIP, open_clip *-quickgelu) or 'gelu' (open_clip's other trainings). Required for OpenAI-layout state dicts, which do not record it.")] = None,
    lora: Annotated[str, typer.Option(help="Alpha-CLIP mode, LoRA (loralib) checkpoints: 'auto' tells against --base whether lora_A/lora_B are already merged into the weights; or 'merged' / 'unmerged'.")] = "auto",
    lora_alpha: Annotated[float, typer.Option(help="Alpha-CLIP mode: loralib's lora_alpha (scaling = lora_alpha / rank); 1 is loralib's default, which Alpha-CLIP uses.")] = 1.0,
    overwrite: Annotated[bool, typer.Option(help="Replace --out if it exists and is not empty.")] = False,
) -> None:
    """Convert an existing checkpoint into a model directory: OpenAI CLIP (the `clip` package's
    state dict or .pt archive, or an open_clip ViT in that layout) -> a Hugging Face CLIP directory
    for `fc train --model`; an Alpha-CLIP visual checkpoint (LoRA ones included) plus --base -> a
    Focus-CLIP export (with its alpha conv) that fctrain.api.FocusClip.load reads.

    Examples:
      fc convert ViT-B-16.pt --out models/clip-b16
      fc convert open_clip_vit_b16.pt --activation gelu --bpe bpe_simple_vocab_16e6.txt.gz --out models/oc-b16
      fc convert clip_b16_grit1m_fultune_8xe.pth --base models/clip-b16 --out models/alpha-clip-b16
    """
    from transformers import CLIPConfig

    from fcdata.errors import UserError
    from fctrain.convert import convert_alpha_clip_checkpoint, convert_openai_checkpoint, describe

    if base is not None and (tokenizer is not None or bpe is not None):
        raise UserError("--tokenizer and --bpe are for OpenAI checkpoints; with --base the tokenizer comes from the base model")
    if base is None and (lora != "auto" or lora_alpha != 1.0):
        raise UserError("--lora and --lora-alpha are for Alpha-CLIP checkpoints (with --base)")
    if base is not None:
        result = convert_alpha_clip_checkpoint(checkpoint, base, out, activation=activation, lora=lora,
                                               lora_alpha=lora_alpha, overwrite=overwrite)
        kind = "Alpha-CLIP (vision + alpha conv; text tower and tokenizer from the base) as a Focus-CLIP export"
    else:
        result = convert_openai_checkpoint(checkpoint, out, tokenizer, bpe=bpe, activation=activation, overwrite=overwrite)
        kind = "OpenAI CLIP as a Hugging Face CLIP directory"
    for note in result.notes:
        typer.echo(f"  {note}")
    typer.echo(f"wrote {kind} to {result.out_dir}: {describe(CLIPConfig.from_pretrained(result.out_dir))}")
