"""`fc show`: shard samples as pictures, with their region masks overlaid and phrases listed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def show(
    shards: Annotated[str, typer.Option(help="A shard folder, file or pattern.")],
    out: Annotated[Path, typer.Option(help="PNG to write.")] = Path("samples.png"),
    count: Annotated[int, typer.Option(help="Samples to draw.", min=1)] = 8,
    regions: Annotated[int, typer.Option(help="Regions drawn per sample.", min=1)] = 6,
    split: Annotated[str, typer.Option(help="Split to take from a shard folder.")] = "train",
    relations: Annotated[bool, typer.Option(help="Draw each sample's first relation as its graded alpha (subject 1, object 0.5) instead.")] = False,
) -> None:
    """Render the first samples of the shards: image, masks tinted per region, boxes, phrases.

    Examples:
      fc show --shards data/shards --count 8 --out samples.png
      fc show --shards data/shards --relations --out relations.png
    """
    from fcdata.errors import CountingHandler
    from fcdata.loader import resolve_shards
    from fcdata.outputs import check_output_file
    from fcdata.show import render_shard_samples, save_grid

    check_output_file(out)
    handler = CountingHandler("fc show")
    pictures = render_shard_samples(resolve_shards(shards, split), count, regions, handler, relations)
    typer.echo(f"wrote {save_grid(pictures, out)} ({len(pictures)} samples; skipped {handler.summary()})")
