"""`fc bench ...`: throughput beside a baseline in the same run, as JSON rows."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(help="Benchmarks: each prints JSON rows and records them under benchmarks/results/.", no_args_is_help=True)

WorkDir = Annotated[Path, typer.Option(help="Scratch folder for the generated corpus and outputs.")]
Record = Annotated[bool, typer.Option(help="Also write the rows to benchmarks/results/<date>-<bench>-<n>.json.")]


@app.command("shard")
def shard(
    vg_root: Annotated[Optional[Path], typer.Option(help="A VG root to shard; default: a generated VG-like corpus.")] = None,
    work: WorkDir = Path("runs/bench"),
    images: Annotated[int, typer.Option(help="Images in the generated corpus.")] = 1000,
    regions_per_image: Annotated[int, typer.Option(help="Regions per generated image (VG averages ~50).")] = 50,
    repeats: Annotated[int, typer.Option(help="Runs per case; the best is kept.")] = 3,
    record: Record = True,
) -> None:
    """Shard throughput per worker vs the codec ceiling and a full-decode baseline.

    Example: fc bench shard --images 1000 --repeats 3
    """
    from fcbench.shard import run

    run(vg_root, work, images=images, regions_per_image=regions_per_image, repeats=repeats, save=record)
