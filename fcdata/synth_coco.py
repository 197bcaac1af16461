"""The COCO side of the synthetic Visual Genome: `coco_instances.json`, COCO's instances format
for the images that have a `coco_id`, from the objects' true masks (which are not boxes).

Per object a segmentation in one of COCO's three encodings, drawn per object: polygons (the
outline traced along the mask's row extents, every few rows), compressed RLE, or uncompressed RLE
with `iscrowd` 1 (as COCO stores crowds). A quarter of the COCO images are described at 1.5x the
VG image's size (COCO photo larger than VG's copy), so consumers must rescale.
"""

from __future__ import annotations

import numpy as np

INSTANCES_FILE = "coco_instances.json"
LARGER_COCO_SHARE = 0.25  # COCO images stated at COCO_SCALE times the VG size
COCO_SCALE = 1.5
POLYGON_ROW_STEP = 3  # outline points every this many rows
ENCODINGS = ("polygon", "rle", "crowd_rle")
ENCODING_WEIGHTS = (0.6, 0.25, 0.15)


def coco_size(rng: np.random.Generator, width: int, height: int) -> tuple[int, int, float]:
    scale = COCO_SCALE if rng.random() < LARGER_COCO_SHARE else 1.0
    return round(width * scale), round(height * scale), scale


def uncompressed_rle(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE counts: run lengths in column-major order, starting with zeros."""
    flat = mask.flatten(order="F").astype(np.int8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate(([0], changes, [flat.size]))
    counts = np.diff(bounds).tolist()
    return ([0] + counts) if flat.size and flat[0] else counts


def outline_polygon(mask: np.ndarray, scale: float) -> list[float]:
    """A polygon around the mask's row extents (left edges down, right edges up), scaled."""
    rows = np.flatnonzero(mask.any(axis=1))
    picked = np.unique(np.concatenate((rows[::POLYGON_ROW_STEP], rows[-1:])))
    left, right = [], []
    for y in picked.tolist():
        cols = np.flatnonzero(mask[y])
        left.append((cols[0], y + 0.5))
        right.append((cols[-1] + 1, y + 0.5))
    top, bottom = picked[0], picked[-1]
    points = [(left[0][0], top)] + left + [(left[-1][0], bottom + 1), (right[-1][0], bottom + 1)] + right[::-1] + [(right[0][0], top)]
    return [round(float(v) * scale, 2) for point in points for v in point]


def instance_records(
    rng: np.random.Generator, masks: list[np.ndarray], coco_width: int, coco_height: int, scale: float,
) -> list[dict]:
    """Full-image bool masks of the objects (VG size) -> annotation dicts without ids."""
    import pycocotools.mask as mask_utils
    from PIL import Image

    records = []
    for mask in masks:
        encoding = ENCODINGS[int(rng.choice(len(ENCODINGS), p=ENCODING_WEIGHTS))]
        large = mask
        if scale != 1.0:
            image = Image.fromarray(mask.astype(np.uint8) * np.uint8(255))
            large = np.asarray(image.resize((coco_width, coco_height), Image.Resampling.NEAREST)) >= 128
        rle = mask_utils.encode(np.asfortranarray(large.astype(np.uint8)))
        if encoding == "polygon":
            segmentation = [outline_polygon(mask, scale)]
            polygon_rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, coco_height, coco_width))
            area, bbox = float(mask_utils.area(polygon_rle)), mask_utils.toBbox(polygon_rle).tolist()
        else:
            area, bbox = float(mask_utils.area(rle)), mask_utils.toBbox(rle).tolist()
            if encoding == "rle":
                segmentation = {"size": [coco_height, coco_width], "counts": rle["counts"].decode()}
            else:
                segmentation = {"size": [coco_height, coco_width], "counts": uncompressed_rle(large)}
        records.append({
            "segmentation": segmentation, "area": area, "bbox": [round(v, 2) for v in bbox],
            "iscrowd": int(encoding == "crowd_rle"),
        })
    return records
