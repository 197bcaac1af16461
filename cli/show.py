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
) -> None:
    """Render the first samples of the shards: image, masks tinted per region, boxes, phrases.

    Example: fc show --shards data/shards --count 8 --out samples.png
    """
    from fcdata.loader import resolve_shards
    from fcdata.reader import read_shard
    from fcdata.show import render_sample, save_grid

    pictures = []
    for shard in resolve_shards(shards, split):
        for sample in read_shard(shard):
            pictures.append(render_sample(sample, regions))
            if len(pictures) == count:
                break
        if len(pictures) == count:
            break
    typer.echo(f"wrote {save_grid(pictures, out)} ({len(pictures)} samples)")
