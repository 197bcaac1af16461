"""`fc synth`: a small Visual-Genome-format dataset, generated offline."""

from __future__ import annotations

from typing import Annotated

import typer

from fc.options import OutDir, Seed, Workers
from fcdata.options import SynthOptions

_DEFAULTS = SynthOptions()


def synth(
    out: OutDir,
    images: Annotated[int, typer.Option(help="Images to list in image_data.json.")] = _DEFAULTS.num_images,
    seed: Seed = _DEFAULTS.seed,
    version: Annotated[
        str, typer.Option(help="VG release whose field names to write: 1.0, 1.2 or 1.4.")
    ] = _DEFAULTS.version,
    quirks: Annotated[
        bool,
        typer.Option(
            help="Inject VG's real defects (corrupt files, bad boxes, odd phrases), a fixed "
            "number of each, listed in synth_report.json. Needs --images 30 or more."
        ),
    ] = _DEFAULTS.quirks,
    regions_per_image: Annotated[
        int,
        typer.Option(help="Pad images with extra regions up to this many (VG averages ~50)."),
    ] = _DEFAULTS.regions_per_image,
    workers: Workers = _DEFAULTS.workers,
) -> None:
    """Generate a dataset in Visual Genome's layout: image_data.json, region_descriptions.json,
    objects.json, relationships.json and JPEGs under VG_100K/ and VG_100K_2/. Each image holds
    distinct shapes, each with a region phrase that only it fits.

    Example: fc synth --out data/vg-synth --images 500 --quirks --regions-per-image 50
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
    )

    from fcdata.synth import generate_vg

    options = SynthOptions(
        num_images=images, seed=seed, version=version, quirks=quirks,
        regions_per_image=regions_per_image, workers=workers,
    )
    console = Console(stderr=True)
    columns = (TextColumn("[bold]synth"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("synth", total=options.num_images)
        report = generate_vg(out, options, lambda done: progress.advance(task, done))
    injected = sum(report.quirks.values())
    console.print(
        f"wrote {report.images_written} images and {report.regions_written} regions to {out} "
        f"(VG {version} field names, {injected} quirks injected; see {out}/synth_report.json)"
    )
