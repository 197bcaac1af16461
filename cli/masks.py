"""`fc masks`: SAM / SAM2 masks for the regions of existing shards."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fc.options import OutDir
from fcdata.options import MaskOptions

_DEFAULTS = MaskOptions()


def masks(
    shards: Annotated[Path, typer.Option(help="Folder of input shards (fc shard's --out).")],
    out: OutDir,
    sam_model: Annotated[Path, typer.Option(help="Local folder with a saved SamModel and its processor, or a Sam2Model (its config.json says which).")],
    batch_images: Annotated[int, typer.Option(help="Images per image-encoder pass (output unchanged).")] = _DEFAULTS.batch_images,
    min_predicted_iou: Annotated[float, typer.Option(help="Below this predicted IoU a region keeps its box.")] = _DEFAULTS.min_predicted_iou,
    max_outside_box: Annotated[float, typer.Option(help="Above this share of mask pixels outside the grown box: keep the box.")] = _DEFAULTS.max_outside_box,
    box_margin: Annotated[float, typer.Option(help="Grow the box by this share of each side before that test.")] = _DEFAULTS.box_margin,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = _DEFAULTS.device,
    ray: Annotated[str, typer.Option(help="Run on a Ray cluster (one SAM actor per GPU): its address, 'auto', or 'local'.")] = "",
    ray_cpu_actors: Annotated[int, typer.Option(help="With --ray on a cluster without GPUs: CPU actors.", min=1)] = 1,
) -> None:
    """Prompt SAM with every region's box and write new shards whose regions carry its masks
    (same samples and order; box fallback by the documented thresholds). Resumable.

    Example: fc masks --shards data/shards --out data/shards-sam --sam-model models/sam-vit-base
    (on a cluster: add --ray auto)
    """
    from rich.console import Console

    from fc.progress import RichShardProgress
    from fcdata.refine import refine_shards

    options = MaskOptions(
        batch_images=batch_images, min_predicted_iou=min_predicted_iou, max_outside_box=max_outside_box,
        box_margin=box_margin, device=device,
    )
    with RichShardProgress() as progress:
        if ray:
            from fcdata.refine_ray import refine_shards_ray

            summary = refine_shards_ray(shards, out, sam_model, options, ray, ray_cpu_actors, progress)
        else:
            summary = refine_shards(shards, out, sam_model, options, progress)
    regions = summary["regions"]
    Console(stderr=True).print(
        f"masks: {summary['images']:,} images; regions with a SAM mask {regions['regions_sam']:,} "
        f"({100 * summary['sam_share_of_prompted']:.1f}% of prompted), box kept: low predicted IoU "
        f"{regions['box_low_predicted_iou']:,}, outside the box {regions['box_mask_outside_box']:,}, "
        f"empty {regions['box_empty_mask']:,}; COCO masks kept {regions['regions_coco_kept']:,}; in {out}"
    )
