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
    repeats: Annotated[int, typer.Option(help="Runs per case; medians are reported.")] = 3,
    annotation_scale: Annotated[
        float,
        typer.Option(help="Also time the annotation phase on VG-size files (1 = all 108,077 images, ~2.0 GB) beside json.load and orjson, and fc shard's peak memory on them; 0 = skip."),
    ] = 1.0,
    record: Record = True,
) -> None:
    """Shard throughput per worker vs the codec ceiling and a full-decode baseline; the
    annotation phase at VG's scale vs json.load and orjson, with peak memory.

    Example: fc bench shard --images 1000 --repeats 3
    """
    from fcbench.shard import run

    run(vg_root, work, images=images, regions_per_image=regions_per_image, repeats=repeats, save=record,
        annotation_scale=annotation_scale)


@app.command("annotations")
def annotations(
    work: WorkDir = Path("runs/bench"),
    scale: Annotated[float, typer.Option(help="Share of VG's 108,077 images in the generated annotation files (1 = full size, ~2.0 GB).")] = 1.0,
    workers: Annotated[str, typer.Option(help="Worker counts to run, comma-separated.")] = "2",
    repeats: Annotated[int, typer.Option(help="Runs per case; medians (and the largest peak memory) are reported.")] = 1,
    record: Record = True,
) -> None:
    """The annotation phase alone: peak memory of `fc shard` on VG-size files with and without
    relationships, load_vg's time and stages, json.load and orjson beside it, the record scan.

    Example: fc bench annotations --work /tmp/vgscale --scale 1 --workers 2
    """
    from fcbench.annotations import run_and_record

    counts = _integers(workers, "--workers")
    if not 0 < scale <= 1:
        raise typer.BadParameter(f"must be in (0, 1], got {scale}", param_hint="--scale")
    run_and_record(work, scale, counts, repeats, save=record)


@app.command("loader")
def loader(
    shards: Annotated[Optional[Path], typer.Option(help="A shard folder; default: shards of a generated VG-like corpus.")] = None,
    work: WorkDir = Path("runs/bench"),
    images: Annotated[int, typer.Option(help="Images in the generated corpus.")] = 1000,
    size: Annotated[int, typer.Option(help="Model input size, px.")] = 224,
    workers: Annotated[str, typer.Option(help="Comma-separated DataLoader worker counts to measure.")] = "1,2",
    repeats: Annotated[int, typer.Option(help="Runs per case; medians are reported.")] = 3,
    peers: Annotated[str, typer.Option(help="Comma-separated peers to run beside it (webdataset, spdl, dali); '' for none.")] = "webdataset,spdl,dali",
    views: Annotated[Optional[int], typer.Option(help="Views each case is timed over (default: half the corpus', at most 4000).", min=1)] = None,
    record: Record = True,
) -> None:
    """Loader images per CPU second per worker vs decoding the same JPEGs alone, vs a naive loader
    and vs its peers (webdataset as open_clip builds it, SPDL, DALI's CPU pipeline).

    Example: fc bench loader --workers 1,2,4 --peers webdataset
    """
    from fcbench.loader import PEERS, run
    from fcdata.errors import UserError

    counts = _integers(workers, "--workers")
    chosen = tuple(p for p in (p.strip() for p in peers.split(",")) if p)
    unknown = [p for p in chosen if p not in PEERS]
    if unknown:
        raise UserError(f"unknown peer {unknown[0]!r}; known: {', '.join(PEERS)}")
    run(shards, work, images=images, size=size, workers=counts, repeats=repeats, save=record, views=views, peers=chosen)


@app.command("masks")
def masks(
    work: WorkDir = Path("runs/bench"),
    images: Annotated[int, typer.Option(help="Images in the generated corpus.")] = 200,
    regions_per_image: Annotated[int, typer.Option(help="Regions per generated image (VG averages ~50).")] = 50,
    sam_images: Annotated[int, typer.Option(help="Images fc masks runs on (tiny random SAM, then SAM2).")] = 100,
    record: Record = True,
) -> None:
    """Segmentation masks: bytes per image and decode time per view for layout runs-v1 beside COCO
    RLE and 1-bit baselines; fc shard --coco-instances bytes; fc masks images/s (tiny SAM and SAM2).

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
    sweep: Annotated[Optional[str], typer.Option(help="Comma-separated batch sizes: each case over them, up to the first that does not fit.")] = None,
    peak_tflops: Annotated[Optional[float], typer.Option(help="bf16 peak for MFU (default: the GPU's datasheet figure).")] = None,
    memory_cap_gib: Annotated[float, typer.Option(help="With --sweep on CUDA: also sweep LoRA+checkpointing under this GPU memory cap (0: skip).")] = 16.0,
    record: Record = True,
) -> None:
    """ViT-B/16 RGBA training-step speed (LoRA, +checkpointing) beside full vision fine-tuning and
    an uncached text tower; on CUDA also bf16 vs fp32, peak memory and MFU. With --sweep: batch
    sizes until one does not fit, fp16 at LoRA's best, and the batches a 16-GB card trains at.

    Example: fc bench step --batch 256;  fc bench step --sweep 64,128,256,512
    """
    if sweep:
        from fcbench.step import sweep as run_sweep

        batches = _integers(sweep, "--sweep")
        run_sweep(batches=batches, image_size=image_size, steps=steps, device=device, peak_tflops=peak_tflops,
                  memory_cap_gib=memory_cap_gib or None, save=record)
        return
    from fcbench.step import run

    run(batch=batch, image_size=image_size, steps=steps, device=device, save=record)


@app.command("gpu-check")
def gpu_check(
    out: Annotated[Path, typer.Argument(help="Results folder: gpu_check.json and one log per stage.")],
    cpu: Annotated[bool, typer.Option("--cpu", help="The same stages at tiny sizes on CPU.")] = False,
    stages: Annotated[str, typer.Option(help="Comma-separated subset of env,gpu_tests,step,loader,train.")] = "env,gpu_tests,step,loader,train",
) -> None:
    """The prepared GPU check (< 8 minutes): environment and matmul peak, the GPU tests, the step
    sweep, the loader feeding the GPU and a short training run with a resume, each stage under a
    time budget. Exit code 1 when a stage did not finish ok.

    Example: fc bench gpu-check runs/gpu-check   (or: bash benchmarks/gpu_check.sh runs/gpu-check)
    """
    from fcbench.gpu_check import check

    code = check(out, cpu, [s for s in stages.split(",") if s])
    if code:
        raise typer.Exit(code)


def _integers(text: str, option: str) -> tuple[int, ...]:
    from fcdata.errors import UserError

    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"{option} takes comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise UserError(f"{option} takes positive integers, got {text!r}")
    return values
