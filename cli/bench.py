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


@app.command("loader")
def loader(
    shards: Annotated[Optional[Path], typer.Option(help="A shard folder; default: shards of a generated VG-like corpus.")] = None,
    work: WorkDir = Path("runs/bench"),
    images: Annotated[int, typer.Option(help="Images in the generated corpus.")] = 1000,
    size: Annotated[int, typer.Option(help="Model input size, px.")] = 224,
    workers: Annotated[str, typer.Option(help="Comma-separated DataLoader worker counts to measure.")] = "1,2",
    repeats: Annotated[int, typer.Option(help="Runs per case; medians are reported.")] = 3,
    record: Record = True,
) -> None:
    """Loader samples/s per worker vs decoding the same JPEGs alone, and vs a naive loader.

    Example: fc bench loader --workers 1,2,4
    """
    from fcbench.loader import run

    counts = tuple(int(w) for w in workers.split(","))
    run(shards, work, images=images, size=size, workers=counts, repeats=repeats, save=record)


@app.command("masks")
def masks(
    work: WorkDir = Path("runs/bench"),
    images: Annotated[int, typer.Option(help="Images in the generated corpus.")] = 200,
    regions_per_image: Annotated[int, typer.Option(help="Regions per generated image (VG averages ~50).")] = 50,
    sam_images: Annotated[int, typer.Option(help="Images fc masks runs on (tiny random SAM).")] = 100,
    record: Record = True,
) -> None:
    """Segmentation masks: bytes per image and decode time per view for layout runs-v1 beside COCO
    RLE and 1-bit baselines; fc shard --coco-instances bytes; fc masks images/s (tiny SAM).

    Example: fc bench masks --images 200
    """
    from fcbench.masks import run

    run(work, images=images, regions_per_image=regions_per_image, sam_images=sam_images, save=record)


@app.command("step")
def step(
    batch: Annotated[Optional[int], typer.Option(help="Samples per step (default 256 on CUDA, 8 on CPU).")] = None,
    image_size: Annotated[int, typer.Option(help="Input size, px.")] = 224,
    steps: Annotated[int, typer.Option(help="Timed steps per case (median reported).")] = 3,
    device: Annotated[str, typer.Option(help="'auto', 'cpu' or 'cuda'.")] = "auto",
    record: Record = True,
) -> None:
    """ViT-B/16 RGBA training-step speed (LoRA, +checkpointing) beside full vision fine-tuning and
    an uncached text tower; on CUDA also bf16 vs fp32, peak memory and MFU.

    Example: fc bench step --batch 256
    """
    from fcbench.step import run

    run(batch=batch, image_size=image_size, steps=steps, device=device, save=record)
