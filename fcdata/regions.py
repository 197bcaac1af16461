"""Region cleaning: phrase normalisation over the whole table (pyarrow), box filtering per image
(numba), and matching regions to Visual Genome objects."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

KEPT = 0
EMPTY_PHRASE, EMPTY_BOX, OUTSIDE_IMAGE, TOO_SMALL, DUPLICATE = 1, 2, 3, 4, 5  # reasons.REGION_DROP_CODES


@dataclass
class Phrases:
    text: pa.Array  # normalised phrases (string)
    keys: np.ndarray  # int64: equal for phrases equal ignoring case, -1 for an empty phrase
    whitespace_fixed: np.ndarray  # bool: whitespace was normalised
    long_fixed: np.ndarray  # bool: cut to max_chars


def normalise_phrases(raw: pa.ChunkedArray | pa.Array, max_chars: int) -> Phrases:
    """Collapse runs of whitespace (tabs, newlines) to one space, strip, cut long phrases at a
    word boundary; keys identify phrases that are equal ignoring case."""
    raw = raw.combine_chunks() if isinstance(raw, pa.ChunkedArray) else raw
    collapsed = pc.utf8_trim_whitespace(pc.replace_substring_regex(raw, r"\s+", " "))
    whitespace_fixed = pc.not_equal(collapsed, raw).to_numpy(zero_copy_only=False)
    too_long = pc.greater(pc.utf8_length(collapsed), max_chars).to_numpy(zero_copy_only=False)
    if too_long.any():
        texts = collapsed.to_pylist()
        for row in np.flatnonzero(too_long):
            texts[row] = _cut_at_word(texts[row], max_chars)
        collapsed = pa.array(texts, pa.string())
    return Phrases(collapsed, phrase_keys(pc.utf8_lower(collapsed)), whitespace_fixed, too_long)


def phrase_keys(lowered: pa.Array) -> np.ndarray:
    """A 63-bit hash of each (lower-cased) phrase, -1 for an empty one.

    A hash rather than a dictionary code: it depends on the phrase alone, so phrases can be keyed
    in any number of chunks (one per worker) and the keys of one image still compare. Keys are
    only compared within an image (~50 phrases), where a 63-bit collision has odds of ~10^-16."""
    lowered = pa.concat_arrays([lowered]) if lowered.offset else lowered  # buffers start at row 0
    _, offsets, data = lowered.buffers()
    offsets = np.frombuffer(offsets, np.int32, len(lowered) + 1) if offsets is not None else np.zeros(1, np.int32)
    data = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
    return _fnv1a(offsets, data)


@njit(cache=True, nogil=True)
def _fnv1a(offsets: np.ndarray, data: np.ndarray) -> np.ndarray:
    keys = np.empty(offsets.shape[0] - 1, np.int64)
    for row in range(keys.shape[0]):
        if offsets[row + 1] == offsets[row]:
            keys[row] = -1
            continue
        value = np.uint64(0xCBF29CE484222325)
        for position in range(offsets[row], offsets[row + 1]):
            value = (value ^ np.uint64(data[position])) * np.uint64(0x100000001B3)
        keys[row] = np.int64(value >> np.uint64(1))
    return keys


def _cut_at_word(text: str, max_chars: int) -> str:
    cut = text[: max_chars + 1].rsplit(" ", 1)[0] if " " in text[:max_chars + 1] else ""
    return (cut or text[:max_chars]).rstrip()


@njit(cache=True, nogil=True)
def filter_regions(
    xywh: np.ndarray,
    phrase_keys: np.ndarray,
    source_width: int,
    source_height: int,
    scale_x: float,
    scale_y: float,
    min_side_px: float,
    duplicate_iou: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """K x 4 source boxes (x, y, w, h) -> stored boxes, a drop code per region (KEPT or a reason)
    and whether the box had to be clipped to the image.

    Stored boxes are int32 (x0, y0, x1, y1), half-open pixel ranges of the stored image, at least
    one pixel wide: the binary mask of a region is exactly its box. The size and duplicate tests
    use the unrounded boxes. A region repeating an earlier kept region's phrase (ignoring case)
    with IoU above `duplicate_iou` is a duplicate: keeping both would make each the other's false
    negative in a contrastive batch.
    """
    count = xywh.shape[0]
    exact = np.zeros((count, 4), np.float64)
    boxes = np.zeros((count, 4), np.int32)
    codes = np.zeros(count, np.int8)
    clipped = np.zeros(count, np.bool_)
    stored_width = int(np.floor(source_width * scale_x + 0.5))
    stored_height = int(np.floor(source_height * scale_y + 0.5))
    for k in range(count):
        x, y, w, h = xywh[k, 0], xywh[k, 1], xywh[k, 2], xywh[k, 3]
        if phrase_keys[k] < 0:
            codes[k] = EMPTY_PHRASE
            continue
        if not (np.isfinite(x) and np.isfinite(y) and np.isfinite(w) and np.isfinite(h)):
            codes[k] = EMPTY_BOX
            continue
        if w <= 0.0 or h <= 0.0:
            codes[k] = EMPTY_BOX
            continue
        x0, y0 = max(x, 0.0), max(y, 0.0)
        x1, y1 = min(x + w, float(source_width)), min(y + h, float(source_height))
        if x1 <= x0 or y1 <= y0:
            codes[k] = OUTSIDE_IMAGE
            continue
        clipped[k] = x0 != x or y0 != y or x1 != x + w or y1 != y + h
        exact[k, 0], exact[k, 1] = x0 * scale_x, y0 * scale_y
        exact[k, 2], exact[k, 3] = x1 * scale_x, y1 * scale_y
        if exact[k, 2] - exact[k, 0] < min_side_px or exact[k, 3] - exact[k, 1] < min_side_px:
            codes[k] = TOO_SMALL
            continue
        for other in range(k):
            if codes[other] == KEPT and phrase_keys[other] == phrase_keys[k]:
                if _iou(exact, k, exact, other) > duplicate_iou:
                    codes[k] = DUPLICATE
                    break
        if codes[k] == KEPT:
            for axis, limit in ((0, stored_width), (1, stored_height)):
                first = min(int(np.floor(exact[k, axis] + 0.5)), limit - 1)
                boxes[k, axis] = first
                boxes[k, axis + 2] = max(int(np.floor(exact[k, axis + 2] + 0.5)), first + 1)
    return boxes, codes, clipped


@njit(cache=True, nogil=True, inline="always")
def _iou(a: np.ndarray, i: int, b: np.ndarray, j: int) -> float:
    width = min(a[i, 2], b[j, 2]) - max(a[i, 0], b[j, 0])
    height = min(a[i, 3], b[j, 3]) - max(a[i, 1], b[j, 1])
    if width <= 0.0 or height <= 0.0:
        return 0.0
    inter = width * height
    union = (a[i, 2] - a[i, 0]) * (a[i, 3] - a[i, 1]) + (b[j, 2] - b[j, 0]) * (b[j, 3] - b[j, 1])
    return inter / (union - inter)


@njit(cache=True, nogil=True)
def match_objects(
    region_xywh: np.ndarray, region_offsets: np.ndarray, object_xywh: np.ndarray, object_offsets: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For each region, the object of the same image overlapping it most: (object row or -1, IoU).

    Rows of image i are offsets[i]:offsets[i + 1] in both tables. Matching is done on source
    boxes: IoU does not change when both boxes are scaled by the same factor per axis.
    """
    regions_xyxy = _xywh_to_xyxy(region_xywh)
    objects_xyxy = _xywh_to_xyxy(object_xywh)
    best = np.full(region_xywh.shape[0], -1, np.int64)
    best_iou = np.zeros(region_xywh.shape[0], np.float32)
    for image in range(region_offsets.shape[0] - 1):
        for k in range(region_offsets[image], region_offsets[image + 1]):
            for m in range(object_offsets[image], object_offsets[image + 1]):
                iou = _iou(regions_xyxy, k, objects_xyxy, m)
                if iou > best_iou[k]:
                    best_iou[k] = iou
                    best[k] = m
    return best, best_iou


@njit(cache=True, nogil=True)
def _xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    xyxy = np.empty_like(xywh)
    for k in range(xywh.shape[0]):
        xyxy[k, 0], xyxy[k, 1] = xywh[k, 0], xywh[k, 1]
        xyxy[k, 2], xyxy[k, 3] = xywh[k, 0] + max(xywh[k, 2], 0.0), xywh[k, 1] + max(xywh[k, 3], 0.0)
    return xyxy


@njit(cache=True, nogil=True)
def tally_regions(
    codes: np.ndarray, clipped: np.ndarray, whitespace_fixed: np.ndarray, long_fixed: np.ndarray
) -> np.ndarray:
    """[regions kept, drops per code 1..5, kept regions clipped, with whitespace fixed, cut long]."""
    tally = np.zeros(9, np.int64)
    for k in range(codes.shape[0]):
        tally[codes[k]] += 1
        if codes[k] == KEPT:
            tally[6] += clipped[k]
            tally[7] += whitespace_fixed[k]
            tally[8] += long_fixed[k]
    return tally
