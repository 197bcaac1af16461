"""Options shared by several commands, as Annotated aliases."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Seed = Annotated[int, typer.Option(help="Seed for everything random; same seed, same output.")]
Workers = Annotated[
    int, typer.Option(help="Worker processes; 0 = all cores available to this process.", min=0)
]
OutDir = Annotated[Path, typer.Option("--out", help="Output directory (created if missing).")]
VgRoot = Annotated[
    Path,
    typer.Option(
        "--vg-root",
        help="Visual Genome root: the *.json annotation files and VG_100K/, VG_100K_2/ or images/.",
    ),
]
