"""One image of a shard task -> its tar members (JPEG, region masks, JSON) and its manifest row.

Runs in the shard workers (fcdata.shard is the job around it): decode the image once at the
smallest scale that covers the stored size, filter and clip its regions, encode the masks and the
sample's JSON. An image that cannot be stored raises SkipImage with a reason (fcdata.reasons).
"""

from __future__ import annotations

import io
import json
import os
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fcdata import coco, keys, masks, reasons, regions, segmasks
from fcdata.errors import error_detail
from fcdata.options import ShardOptions

if TYPE_CHECKING:
    from fcdata.shard import ShardTask


class SkipImage(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


_MODE_FIXES = {
    "L": reasons.FIX_GRAYSCALE, "LA": reasons.FIX_GRAYSCALE, "1": reasons.FIX_GRAYSCALE,
    "I": reasons.FIX_GRAYSCALE, "I;16": reasons.FIX_GRAYSCALE, "F": reasons.FIX_GRAYSCALE,
    "CMYK": reasons.FIX_CMYK, "P": reasons.FIX_PALETTE, "PA": reasons.FIX_PALETTE,
    "RGBA": reasons.FIX_ALPHA,
}
_FORMAT_BY_SUFFIX = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}


def target_size(width: int, height: int, options: ShardOptions) -> tuple[int, int]:
    scale = min(1.0, options.image_size / min(width, height), options.max_long_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def load_image(path: str, options: ShardOptions, fixes: list[str]):
    """Decode once, at the smallest DCT scale that still covers the target, then resize to it.

    Returns (RGB PIL image at the stored size, (source width, source height)).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as stream:
            data = stream.read()
    except FileNotFoundError:
        raise SkipImage(reasons.SKIP_MISSING, path) from None
    try:
        image = Image.open(io.BytesIO(data))
        expected = _FORMAT_BY_SUFFIX.get(os.path.splitext(path)[1].lower())
        if expected is not None and image.format != expected:
            fixes.append(reasons.FIX_FORMAT_MISMATCH)
        source = image.size
        if source[0] * source[1] > options.max_source_pixels:
            raise SkipImage(reasons.SKIP_TOO_LARGE, f"{source[0]}x{source[1]}")
        target = target_size(*source, options)
        if image.format == "JPEG":
            image.draft(image.mode, target)  # decodes at 1/2, 1/4 or 1/8 scale where it can
        if image.mode in _MODE_FIXES:
            fixes.append(_MODE_FIXES[image.mode])
        image = image.convert("RGB") if image.mode != "RGB" else image
        image.load()
    except SkipImage:
        raise
    except UnidentifiedImageError:
        raise SkipImage(reasons.SKIP_UNDECODABLE, "UnidentifiedImageError: not an image format PIL reads") from None
    except (SyntaxError, ValueError, EOFError) as exc:
        raise SkipImage(reasons.SKIP_UNDECODABLE, error_detail(exc)) from None
    except OSError as exc:
        truncated = "truncated" in str(exc) or "broken data stream" in str(exc)
        reason = reasons.SKIP_TRUNCATED if truncated else reasons.SKIP_UNDECODABLE
        raise SkipImage(reason, error_detail(exc, with_type=False)) from None
    if image.size != target:
        image = image.resize(target, Image.Resampling.BILINEAR)
    return image, source


def encode_jpeg(image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _mask_members(
    boxes: np.ndarray, width: int, height: int, options: ShardOptions, coco_image, row: dict,
) -> tuple[dict, dict]:
    """Kept boxes (and the image's COCO instances, if any) -> (tar members, the "mask" entry of
    the JSON). Box profiles always; real masks add layout runs-v1 (fcdata.segmasks)."""
    binary = options.mask == "binary"
    rows, cols = masks.box_profiles(boxes, height, width, 0.0 if binary else options.feather_px)
    members = {keys.MASK_PROFILES: masks.encode_profiles(rows, cols, binary)}
    if coco_image is None:
        return members, {"layout": keys.MASK_LAYOUT_SEPARABLE}
    counts: Counter[str] = Counter()
    full, ann_ids = coco.region_masks(coco_image, boxes, width, height, options.coco_min_iou, counts)
    row.update({f"coco_{name}": counts[name] for name in coco.COUNTS})
    real, fields = segmasks.encode_masks(full, [segmasks.SOURCE_COCO] * len(full), ann_ids)
    if not real:
        return members, {"layout": keys.MASK_LAYOUT_SEPARABLE}
    return {**members, **real}, {"layout": keys.MASK_LAYOUT_RUNS, **fields}


@dataclass
class RegionColumns:
    """One shard's per-region values as object arrays, built once per shard in the worker, so
    that one fancy index gathers an image's values at C speed (per-image list comprehensions were
    a fifth of the non-codec time)."""

    phrase: np.ndarray  # str
    object_id: np.ndarray  # int or None
    object_names: np.ndarray  # list[str] ([] without a match)
    object_synsets: np.ndarray  # list[str]
    object_iou: np.ndarray  # float rounded to 3 places, or None

    @classmethod
    def of(cls, task: ShardTask) -> "RegionColumns":
        matched = (task.region_object >= 0) & (task.region_object_iou >= task.options.object_min_iou)
        rows = np.where(matched, task.region_object, -1).tolist()
        ious = np.round(task.region_object_iou.astype(np.float64), 3).tolist()
        object_ids = task.object_ids.tolist()

        def column(values: list) -> np.ndarray:
            return np.fromiter(values, dtype=object, count=len(values))

        return cls(
            phrase=column(task.phrases),
            object_id=column([object_ids[r] if r >= 0 else None for r in rows]),
            object_names=column([task.object_names[r] if r >= 0 else [] for r in rows]),
            object_synsets=column([task.object_synsets[r] if r >= 0 else [] for r in rows]),
            object_iou=column([iou if r >= 0 else None for r, iou in zip(rows, ious)]),
        )


_TALLY_KEYS = (
    ("regions_kept",)
    + tuple(f"drop_{reason}" for reason in reasons.REGION_DROP_CODES[1:])
    + tuple(f"fix_{reason}" for reason in reasons.REGION_FIXES)
)  # the order of regions.tally_regions


def encode_sample(task: ShardTask, columns: RegionColumns, index: int, row: dict) -> dict[str, bytes]:
    """One image of the task -> tar members by extension; fills the manifest `row` as it goes,
    so that a SkipImage still leaves what was learnt (e.g. the region counts) in it."""
    options = task.options
    image_id = int(task.image_ids[index])
    row["image_fixes"] = []
    first, stop = task.region_offsets[index : index + 2].tolist()
    row["regions_listed"] = stop - first
    if task.relations is not None:
        row["relations_listed"] = task.relations.listed(index)
    if image_id in options.skip_image_ids:
        raise SkipImage(reasons.SKIP_KNOWN_CORRUPT)
    path = task.paths[index]
    if path is None:
        raise SkipImage(reasons.SKIP_MISSING, "no file in VG_100K/, VG_100K_2/ or images/")
    if stop == first:
        raise SkipImage(reasons.SKIP_NO_REGIONS, "no regions listed")
    image, (source_width, source_height) = load_image(path, options, row["image_fixes"])
    stated = tuple(task.stated_sizes[index].tolist())
    if stated != (0, 0) and stated != (source_width, source_height):
        row["image_fixes"].append(reasons.FIX_SIZE_MISMATCH)
    width, height = image.size

    boxes, codes, clipped = regions.filter_regions(
        task.region_xywh[first:stop], task.phrase_keys[first:stop], source_width, source_height,
        width / source_width, height / source_height, options.min_box_side_px, options.duplicate_iou,
    )
    tally = regions.tally_regions(codes, clipped, task.whitespace_fixed[first:stop], task.long_fixed[first:stop])
    row.update(zip(_TALLY_KEYS, tally.tolist()))
    if row["regions_kept"] == 0:
        raise SkipImage(reasons.SKIP_NO_REGIONS, "every region was dropped")

    kept = np.flatnonzero(codes == regions.KEPT)
    kept_boxes = boxes[kept]
    members, mask_meta = _mask_members(
        kept_boxes.astype(np.float32), width, height, options, task.coco_images[index], row
    )
    jpg = encode_jpeg(image, options.jpeg_quality)
    kept += first
    meta = {
        "image_id": image_id,
        "width": width,
        "height": height,
        "source_width": source_width,
        "source_height": source_height,
        "regions": {
            "region_id": task.region_ids[kept].tolist(),
            "phrase": columns.phrase[kept].tolist(),
            "box": kept_boxes.tolist(),
            "object_id": columns.object_id[kept].tolist(),
            "object_names": columns.object_names[kept].tolist(),
            "object_synsets": columns.object_synsets[kept].tolist(),
            "object_iou": columns.object_iou[kept].tolist(),
        },
        "mask": mask_meta,
    }
    if task.relations is not None:
        meta["relations"], relation_counts = task.relations.sample_entry(
            index, (source_width, source_height), (width, height), options.min_box_side_px, options.duplicate_iou,
        )
        row.update(relation_counts)
    meta_bytes = json.dumps(meta, separators=(",", ":"), ensure_ascii=False).encode()
    row.update(
        width=width, height=height, source_width=source_width, source_height=source_height,
        jpg_bytes=len(jpg), mask_bytes=sum(len(v) for v in members.values()),
        meta_bytes=len(meta_bytes),
    )
    return {keys.IMAGE: jpg, **members, keys.META: meta_bytes}
