"""`fc shard`: Visual Genome -> WebDataset shards."""

from __future__ import annotations

from typing import Annotated

import typer

from fc.options import OutDir, VgRoot, Workers
from fcdata.options import ShardOptions

_DEFAULTS = ShardOptions()


def shard(
    vg_root: VgRoot,
    out: OutDir,
    image_size: Annotated[int, typer.Option(help="Shorter side of stored images, px (never upscaled).")] = _DEFAULTS.image_size,
    max_long_side: Annotated[int, typer.Option(help="Cap on the longer side, px.")] = _DEFAULTS.max_long_side,
    jpeg_quality: Annotated[int, typer.Option(help="JPEG quality of stored images.")] = _DEFAULTS.jpeg_quality,
    mask: Annotated[str, typer.Option(help="'binary' (0/255) or 'soft' (edges feathered over --feather-px); both stored as row and column profiles (profiles.png, layout separable-v1).")] = _DEFAULTS.mask,
    feather_px: Annotated[float, typer.Option(help="Soft masks: ramp width across each box edge, px.")] = _DEFAULTS.feather_px,
    min_box_side_px: Annotated[float, typer.Option(help="Drop regions with a side shorter than this, stored px.")] = _DEFAULTS.min_box_side_px,
    duplicate_iou: Annotated[float, typer.Option(help="Same phrase and IoU above this: drop as duplicate.")] = _DEFAULTS.duplicate_iou,
    max_phrase_chars: Annotated[int, typer.Option(help="Cut longer phrases at a word boundary.")] = _DEFAULTS.max_phrase_chars,
    val_fraction: Annotated[float, typer.Option(help="Share of images in the val split (by image-id hash).")] = _DEFAULTS.val_fraction,
    shard_samples: Annotated[int, typer.Option(help="Images per shard.")] = _DEFAULTS.shard_samples,
    coco_instances: Annotated[str, typer.Option(help="COCO instances JSON file(s), comma-separated: real masks for VG's COCO photos.")] = "",
    coco_min_iou: Annotated[float, typer.Option(help="A region takes the COCO instance whose box it overlaps best, from this IoU on.")] = _DEFAULTS.coco_min_iou,
    relations: Annotated[bool, typer.Option("--relations/--no-relations", help="Store relationships.json's relations (subject, predicate, object boxes) in each sample, where the file exists.")] = _DEFAULTS.relations,
    workers: Workers = _DEFAULTS.workers,
) -> None:
    """Turn Visual Genome (images + region descriptions) into WebDataset tar shards with region
    masks, a Parquet manifest and a summary. Resumable: run the same command again after an
    interruption.

    Example: fc shard --vg-root data/vg --out data/shards --workers 8
    (with real masks: --coco-instances instances_train2017.json,instances_val2017.json)
    """
    from rich.console import Console

    from fc.progress import PlainShardProgress, RichShardProgress, display
    from fcdata.shard import shard_vg

    options = ShardOptions(
        image_size=image_size, max_long_side=max_long_side, jpeg_quality=jpeg_quality, mask=mask,
        feather_px=feather_px, min_box_side_px=min_box_side_px, duplicate_iou=duplicate_iou,
        max_phrase_chars=max_phrase_chars, val_fraction=val_fraction, shard_samples=shard_samples,
        coco_instances=tuple(p.strip() for p in coco_instances.split(",") if p.strip()),
        coco_min_iou=coco_min_iou, relations=relations, workers=workers,
    )
    console = Console(stderr=True)
    with display(console, RichShardProgress, PlainShardProgress) as progress:
        summary = shard_vg(vg_root, out, options, progress)
    report_summary(console, summary, out)


def report_summary(console, summary, out) -> None:
    data = summary.data
    if summary.already_complete:
        console.print(f"[green]already complete[/]: {out} (nothing to do)")
    images, regions = data["images"], data["regions"]
    console.print(
        f"images: {images['written']:,} written of {images['listed']:,} "
        f"(train {images['written_by_split']['train']:,}, val {images['written_by_split']['val']:,}); "
        f"skipped {_counts(images['skipped'])}; fixed {_counts(images['fixed'])}"
    )
    console.print(
        f"regions: {regions['kept']:,} kept of {regions['listed']:,}; dropped {_counts(regions['dropped'])}; "
        f"fixed {_counts(regions['fixed'])}; in skipped images {regions['in_skipped_images']:,}"
    )
    if "coco" in data.get("masks", {}):
        by_source, matched = data["masks"]["regions_by_source"], data["masks"]["coco"]
        console.print(
            f"masks: {by_source['coco']:,} regions with a COCO mask, {by_source['box']:,} with their box; "
            f"COCO images {matched['images_with_instances']:,} (size mismatch {matched['images_size_mismatch']:,}), "
            f"unmatched regions {matched['regions_unmatched']:,}, bad segmentations {matched['regions_bad_segmentation']:,}"
        )
    if "relations" in data:
        relations = data["relations"]
        console.print(
            f"relations: {relations['kept']:,} kept of {relations['listed']:,}; "
            f"dropped {_counts(relations['dropped'])}; in skipped images {relations['in_skipped_images']:,}"
        )
    console.print(
        f"shards: {data['shards']['train']} train + {data['shards']['val']} val, "
        f"{data['bytes']['tar_total'] / 2**20:,.1f} MiB (masks {100 * data['bytes']['mask_fraction']:.1f}%) "
        f"in {out}; details in summary.json and manifest.parquet"
    )


def _counts(counter: dict) -> str:
    shown = {k: v for k, v in counter.items() if v}
    return ", ".join(f"{k} {v:,}" for k, v in shown.items()) if shown else "none"
