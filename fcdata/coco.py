"""COCO instance segmentations for Visual Genome regions (`fc shard --coco-instances`).

About half of Visual Genome's images are COCO photos (`coco_id` in image_data.json). For such an
image every kept region is given the instance whose box matches it best:

- match: IoU of the region box with the instance box (COCO's `bbox` brought to the stored image)
  >= ShardOptions.coco_min_iou (default 0.5, the usual detection threshold: the two boxes are
  the same object); ties go to the lower annotation id, so the result never depends on file order.
- mask: pycocotools decodes the segmentation (polygons, uncompressed RLE, compressed RLE;
  `iscrowd` instances are used like the others) at COCO's image size (`annToMask`'s rule); when
  the stored image has another size it is brought there by area averaging (PIL's BOX filter on
  0/255) and kept where at least half of a stored pixel is covered (value >= 128). Area averaging
  rather than nearest neighbour, because VG stores images at a fraction of COCO's size, where
  nearest neighbour keeps or drops thin parts by where the sample grid falls.
- VG's JPEG is the COCO photo, sometimes at another size: sizes whose aspect ratios differ by
  more than 2% are not the same picture, and the image keeps box masks (counted).
- a segmentation pycocotools cannot read, or one that covers no pixel, leaves that region its box
  (counted).
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from fcdata.errors import UserError

ASPECT_TOLERANCE = 0.02  # relative difference of width / height beyond which sizes are different pictures

# Counted in summary.json under masks.coco (per region unless said).
COUNT_MATCHED = "regions_matched"  # given an instance mask
COUNT_UNMATCHED = "regions_unmatched"  # in a COCO image, no instance box at IoU >= coco_min_iou
COUNT_BAD_SEGMENTATION = "regions_bad_segmentation"  # matched, but the segmentation is unreadable or empty
COUNT_IMAGES = "images_with_instances"  # images whose COCO record was found (per image)
COUNT_SIZE_MISMATCH = "images_size_mismatch"  # COCO and VG sizes are not one picture (per image)
COUNTS = (COUNT_MATCHED, COUNT_UNMATCHED, COUNT_BAD_SEGMENTATION, COUNT_IMAGES, COUNT_SIZE_MISMATCH)


@dataclass
class CocoImage:
    """One COCO image's instances, as read from the file (coordinates in COCO pixels)."""

    width: int
    height: int
    ann_ids: np.ndarray  # int64 [n], ascending
    boxes: np.ndarray  # float64 [n, 4] x0, y0, x1, y1
    segmentations: list  # [n] the raw `segmentation` values


def load_instances(paths: Sequence[Path], wanted_coco_ids: set[int]) -> dict[int, CocoImage]:
    """COCO instance files -> coco image id -> its instances, for the ids VG lists."""
    images: dict[int, tuple[int, int]] = {}
    annotations: dict[int, list[dict]] = {}
    for path in paths:
        data = _read(path)
        for record in data.get("images", []):
            if isinstance(record, dict) and record.get("id") in wanted_coco_ids:
                images[record["id"]] = (int(record["width"]), int(record["height"]))
        for ann in data.get("annotations", []):
            if isinstance(ann, dict) and ann.get("image_id") in wanted_coco_ids:
                annotations.setdefault(ann["image_id"], []).append(ann)
    if not images:
        names = ", ".join(str(p) for p in paths)
        raise UserError(
            f"--coco-instances {names}: none of its images is a COCO photo of this Visual Genome "
            "(no image id matches a coco_id in image_data.json); is it the right file?"
        )
    out = {}
    for coco_id, (width, height) in images.items():
        anns = sorted(
            (a for a in annotations.get(coco_id, []) if _valid_bbox(a.get("bbox"))), key=lambda a: a["id"]
        )
        xywh = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
        out[coco_id] = CocoImage(
            width, height, np.array([a["id"] for a in anns], np.int64),
            np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1),
            [a.get("segmentation") for a in anns],
        )
    return out


def _read(path: Path) -> dict:
    try:
        with open(path, "rb") as stream:
            data = json.load(stream)
    except FileNotFoundError:
        raise UserError(f"--coco-instances: {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"--coco-instances: cannot read {path} as JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(data.get("annotations"), list):
        raise UserError(f"--coco-instances: {path} is not a COCO instances file (no images and annotations lists)")
    return data


def _valid_bbox(bbox) -> bool:
    return (
        isinstance(bbox, list) and len(bbox) == 4
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in bbox)
        and bbox[2] > 0 and bbox[3] > 0
    )


def same_picture(coco: CocoImage, width: int, height: int) -> bool:
    return abs((coco.width / coco.height) / (width / height) - 1.0) <= ASPECT_TOLERANCE


def match_instances(region_boxes: np.ndarray, instance_boxes: np.ndarray, min_iou: float) -> np.ndarray:
    """K x 4 region boxes, n x 4 instance boxes (same pixels, instances in ascending id) -> per
    region the index of its best instance at IoU >= min_iou, else -1 (ties: the first)."""
    if len(instance_boxes) == 0 or len(region_boxes) == 0:
        return np.full(len(region_boxes), -1, np.int64)
    r, b = region_boxes[:, None, :], instance_boxes[None, :, :]
    inter = np.clip(np.minimum(r[..., 2], b[..., 2]) - np.maximum(r[..., 0], b[..., 0]), 0, None) * np.clip(
        np.minimum(r[..., 3], b[..., 3]) - np.maximum(r[..., 1], b[..., 1]), 0, None
    )
    area_r = (r[..., 2] - r[..., 0]) * (r[..., 3] - r[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    iou = inter / np.maximum(area_r + area_b - inter, 1e-12)
    best = np.argmax(iou, axis=1)  # the first maximum: the lowest annotation id
    return np.where(iou[np.arange(len(best)), best] >= min_iou, best, -1)


def instance_mask(segmentation, coco_height: int, coco_width: int) -> np.ndarray:
    """A COCO segmentation -> H x W uint8 0/1 at COCO's size (pycocotools' annToMask rule).
    Raises ValueError for one pycocotools cannot read."""
    import pycocotools.mask as mask_utils

    try:
        if isinstance(segmentation, list):  # polygons: flat [x0, y0, x1, y1, ...] lists
            polygons = [p for p in segmentation if isinstance(p, list)]
            if not polygons or any(len(p) < 6 or len(p) % 2 for p in polygons):
                raise ValueError("a polygon needs at least 3 points")
            rle = mask_utils.merge(mask_utils.frPyObjects([[float(v) for v in p] for p in polygons], coco_height, coco_width))
        elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):  # uncompressed RLE
            size = segmentation.get("size")
            if size != [coco_height, coco_width] or sum(segmentation["counts"]) != coco_height * coco_width:
                raise ValueError("RLE size or counts do not match the image")
            rle = mask_utils.frPyObjects(segmentation, coco_height, coco_width)
        elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), (str, bytes)):  # compressed
            if segmentation.get("size") != [coco_height, coco_width]:
                raise ValueError("RLE size does not match the image")
            counts = segmentation["counts"]
            rle = {"size": segmentation["size"], "counts": counts.encode() if isinstance(counts, str) else counts}
        else:
            raise ValueError(f"unknown segmentation type {type(segmentation).__name__}")
        with warnings.catch_warnings():  # pycocotools' own NumPy 2 copy-keyword deprecation
            warnings.simplefilter("ignore", DeprecationWarning)
            return mask_utils.decode(rle)
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 - pycocotools raises assorted types for bad input
        raise ValueError(f"pycocotools cannot read the segmentation: {exc}") from None


def to_stored_size(mask01: np.ndarray, width: int, height: int) -> np.ndarray:
    """A 0/1 mask at COCO's size -> bool at the stored size (area average, kept from half)."""
    if mask01.shape == (height, width):
        return mask01.astype(bool)
    from PIL import Image

    image = Image.fromarray(mask01.astype(np.uint8) * np.uint8(255))
    return np.asarray(image.resize((width, height), Image.Resampling.BOX)) >= 128


def region_masks(
    coco: CocoImage, region_boxes: np.ndarray, width: int, height: int, min_iou: float, counts: Counter,
) -> tuple[list[np.ndarray | None], list[int]]:
    """Masks (bool, stored size) for the regions of one image, None where the box stays, and per
    region the annotation id it uses (-1 for none: regions of one instance share its mask)."""
    if not same_picture(coco, width, height):
        counts[COUNT_SIZE_MISMATCH] += 1
        return [None] * len(region_boxes), [-1] * len(region_boxes)
    counts[COUNT_IMAGES] += 1
    scale = np.array([width / coco.width, height / coco.height] * 2)
    match = match_instances(np.asarray(region_boxes, np.float64), coco.boxes * scale, min_iou)
    decoded: dict[int, np.ndarray | None] = {}
    out: list[np.ndarray | None] = []
    ids: list[int] = []
    for index in match.tolist():
        if index < 0:
            counts[COUNT_UNMATCHED] += 1
            out.append(None)
            ids.append(-1)
            continue
        if index not in decoded:
            try:
                mask = to_stored_size(instance_mask(coco.segmentations[index], coco.height, coco.width), width, height)
                decoded[index] = mask if mask.any() else None
            except ValueError:
                decoded[index] = None
        if decoded[index] is None:
            counts[COUNT_BAD_SEGMENTATION] += 1
            out.append(None)
            ids.append(-1)
        else:
            counts[COUNT_MATCHED] += 1
            out.append(decoded[index])
            ids.append(int(coco.ann_ids[index]))
    return out, ids
