"""`fc demo`: the whole pipeline, offline, on an embedded default."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fc.options import Workers


def demo(
    out: Annotated[Path, typer.Option(help="Folder for everything the demo writes.")] = Path("fc-demo"),
    images: Annotated[int, typer.Option(help="Images to generate.", min=30)] = 240,
    workers: Workers = 0,
) -> None:
    """Generate a small Visual-Genome-format dataset (with VG's quirks planted), shard it, and
    report what was written, skipped and repaired. Needs no network and no downloads.

    Example: fc demo --out fc-demo
    """
    from rich.console import Console
    from rich.progress import Progress

    from fc.progress import RichShardProgress
    from fc.shard import report_summary
    from fcdata.demo import DemoOptions, run_data_demo

    console = Console(stderr=True)
    options = DemoOptions(out_dir=out, images=images, workers=workers)
    with Progress(console=console, transient=True) as synth_bar, RichShardProgress() as shard_bar:
        task = synth_bar.add_task("generate VG-format data", total=images)
        result = run_data_demo(options, lambda done: synth_bar.advance(task, done), shard_bar)
    console.print(f"[bold]data[/]: {result.synth.images_written} images generated in {result.vg_root}")
    report_summary(console, result.shards, result.shard_dir)
