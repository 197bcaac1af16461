"""`fc synth`: a small Visual-Genome-format dataset, generated offline."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from fc.options import OutDir, Seed, Workers
from fcdata.options import SynthOptions

_DEFAULTS = SynthOptions()


def synth(
    out: OutDir,
    images: Annotated[
        Optional[int],
        typer.Option(help=f"Images to list in image_data.json (default {_DEFAULTS.num_images}; with --vg-scale, VG's 108,077)."),
    ] = None,
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
    vg_scale: Annotated[
        bool,
        typer.Option(
            help="Instead: Visual Genome's annotation files at full size (~5.4M regions, 3.8M "
            "objects, 2.3M relationships, 2.0 GB) in about a minute, to measure sharding's annotation phase; JPEGs "
            "only for the first --image-files images."
        ),
    ] = False,
    image_files: Annotated[int, typer.Option(help="With --vg-scale: images that get a JPEG.")] = 0,
) -> None:
    """Generate a dataset in Visual Genome's layout: image_data.json, region_descriptions.json,
    objects.json, relationships.json and JPEGs under VG_100K/ and VG_100K_2/. Each image holds
    distinct shapes, each with a region phrase that only it fits.

    Examples:
      fc synth --out data/vg-synth --images 500 --quirks --regions-per-image 50
      fc synth --out data/vg-scale --vg-scale --image-files 2000
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
    )

    from fcdata.synth import generate_vg

    console = Console(stderr=True)
    columns = (TextColumn("[bold]synth"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    if vg_scale:
        _vg_scale(console, columns, out, images, image_files, seed, regions_per_image)
        return
    options = SynthOptions(
        num_images=_DEFAULTS.num_images if images is None else images, seed=seed, version=version, quirks=quirks,
        regions_per_image=regions_per_image, workers=workers,
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("synth", total=options.num_images)
        report = generate_vg(out, options, lambda done: progress.advance(task, done))
    injected = sum(report.quirks.values())
    console.print(
        f"wrote {report.images_written} images and {report.regions_written} regions to {out} "
        f"(VG {version} field names, {injected} quirks injected; see {out}/synth_report.json)"
    )


def _vg_scale(console, columns, out, images, image_files, seed, regions_per_image) -> None:
    from rich.progress import Progress

    from fcdata.synth_scale import VG_IMAGES, ScaleOptions, generate_vg_scale

    options = ScaleOptions(
        num_images=VG_IMAGES if images is None else images, image_files=image_files, seed=seed,
        **({"regions_per_image": float(regions_per_image)} if regions_per_image else {}),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("synth", total=options.num_images)
        report = generate_vg_scale(out, options, lambda done: progress.advance(task, done))
    counts, sizes = report["counts"], report["bytes"]
    console.print(
        f"wrote {counts['images']:,} images ({options.image_files:,} with a JPEG), {counts['regions']:,} regions"
        f", {counts['objects']:,} objects and {counts.get('relationships', 0):,} relationships to {out} "
        f"({sum(sizes.values()) / 2**20:,.0f} MiB of annotations)"
    )
