"""Arbitrary (segmentation) masks in shards: layout `runs-v1`.

Box masks are separable and cost half a KB per image (`separable-v1`, fcdata.masks); a COCO or SAM
mask is not. Layout `runs-v1` keeps the box profiles of every region (`profiles.png`, binary or
soft, exactly as separable-v1, so a region without a real mask still has its box), and stores
each distinct real mask once, cut to its tight rectangle [x0, y0, x1, y1) (half-open stored
pixels), the masks' rows stacked top to bottom in mask order:

- binary masks, `runs.png` (16-bit gray): one PNG row per mask row, holding the columns (from the
  rectangle's x0) where the row switches on, off, on, ... left to right, then zeros (pairs of
  zeros are empty runs, so a reader may treat every slot as a switch). Rows after the first use
  PNG's Up filter (the row above subtracted), so a smooth outline becomes near-zero differences.
- graded masks (any value other than 0 and 255, "graded": true), `crops.png` (8-bit gray): the
  crops' pixels themselves, padded with zeros on the right, filtered the same way.

In the JSON's "mask": `mask_of` (per region: its mask's index, -1 = use the box profile), `rects`
(flat: x0, y0, x1, y1 of mask 0, then of mask 1, ...), `sources` (the SOURCES used),
`source_of` (per mask, an index into `sources`; absent when there is one source) and `graded`. Regions that share a COCO instance
share one mask. (Flat lists and indexed sources keep the JSON at ~1 KB for 50 masks.)

Why run boundaries (`fc bench masks`, benchmarks/results/README.md): with a distinct smooth mask
for each of ~50 regions, cropped 1-bit masks with PNG's Up filter took ~36% of the rest of the
shard, COCO RLE strings in the JSON ~29%, full-frame 1-bit masks ~50%, run boundaries ~11%: an
outline moves by a pixel or so per row, which Up turns into small numbers that deflate codes in
a few bits, where 1-bit rows leave it a scatter of bit patterns.

Read with PIL and NumPy alone (README, "Segmentation masks"): rows of mask e start at the sum of
the heights of masks 0..e-1; a pixel is on where an odd number of switches lie at or left of it.
"""

from __future__ import annotations

import zlib
from typing import Sequence

import numpy as np
from numba import njit

from fcdata import keys, masks

SOURCE_BOX = "box"  # no real mask: the box profile is the mask
SOURCE_COCO = "coco"  # a COCO instance segmentation (fc shard --coco-instances)
SOURCE_SAM = "sam"  # predicted by SAM / SAM2 from the region's box (fc masks)
SOURCES = (SOURCE_BOX, SOURCE_COCO, SOURCE_SAM)


def tight_rect(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) half-open bounds of the non-zero pixels, or None for an empty mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _filtered_lines(blocks: Sequence[np.ndarray]) -> np.ndarray:
    """Row-byte blocks (one per mask, equal widths) -> PNG scanlines: None on the first row, Up
    on all others."""
    stacked = np.concatenate(blocks)
    lines = np.empty((stacked.shape[0], 1 + stacked.shape[1]), np.uint8)
    lines[0, 0], lines[1:, 0] = 0, 2
    lines[0, 1:] = stacked[0]
    np.subtract(stacked[1:], stacked[:-1], out=lines[1:, 1:])
    return lines


@njit(cache=True, nogil=True)
def most_switches(crop: np.ndarray) -> int:
    """The largest number of on/off switches in any row of a binary crop."""
    most = 0
    for r in range(crop.shape[0]):
        count, previous = 0, False
        for c in range(crop.shape[1]):
            on = crop[r, c] != 0
            count += on != previous
            previous = on
        most = max(most, count + previous)  # a run reaching the right edge switches off there
    return most


@njit(cache=True, nogil=True)
def switch_rows(crop: np.ndarray, slots: int) -> np.ndarray:
    """A binary h x w crop -> h x slots uint16: per row the columns where it switches (on, off,
    on, ...), then zeros."""
    out = np.zeros((crop.shape[0], slots), np.uint16)
    for r in range(crop.shape[0]):
        count, previous = 0, False
        for c in range(crop.shape[1]):
            on = crop[r, c] != 0
            if on != previous:
                out[r, count] = c
                count += 1
            previous = on
        if previous:
            out[r, count] = crop.shape[1]
    return out


def encode_runs(crops: Sequence[np.ndarray]) -> bytes:
    """Binary crops (h x w, any nonzero = on) -> runs.png."""
    crops = [np.ascontiguousarray(c) for c in crops]
    slots = max(2, max(most_switches(c) for c in crops))
    blocks = [switch_rows(c, slots).astype(">u2").view(np.uint8) for c in crops]
    lines = _filtered_lines(blocks)
    # Z_FILTERED: the Up differences are small numbers, which Huffman codes beat string matches
    # on. Level 8 rather than 9: 2% larger, half the time (~8 ms per image of 50 masks).
    return masks._png_bytes(lines, slots, lines.shape[0], 16, 8, zlib.Z_FILTERED)


def encode_graded(crops: Sequence[np.ndarray]) -> bytes:
    """uint8 crops (h x w, 0..255) -> crops.png, zero-padded to the widest."""
    width = max(c.shape[1] for c in crops)
    blocks = []
    for crop in crops:
        block = np.zeros((crop.shape[0], width), np.uint8)
        block[:, : crop.shape[1]] = crop
        blocks.append(block)
    lines = _filtered_lines(blocks)
    return masks._png_bytes(lines, width, lines.shape[0], 8, 9)


def rects_of(mask_meta: dict) -> np.ndarray:
    """E x 4 int64 rectangles (x0, y0, x1, y1) of a runs-v1 sample's masks."""
    return np.asarray(mask_meta["rects"], np.int64).reshape(-1, 4)


def _heights(rects: np.ndarray) -> np.ndarray:
    return rects[:, 3] - rects[:, 1]


def _scanlines(data: bytes, rects: np.ndarray, bit_depth: int, rows_needed: int) -> np.ndarray:
    """The first `rows_needed` scanlines (filter byte + row) of a runs.png / crops.png as
    encode_* writes it; decompression stops there."""
    parts = masks.png_parts(data)
    if parts is None:
        raise ValueError("mask PNG: not a PNG file")
    (width, height, depth, colour, interlace), stream = parts
    if (depth, colour, interlace) != (bit_depth, 0, 0) or height != int(_heights(rects).sum()):
        raise ValueError("mask PNG does not match its rectangles in the JSON")
    row_bytes = width * bit_depth // 8
    wanted = rows_needed * (row_bytes + 1)
    if wanted == height * (row_bytes + 1):
        inflated = zlib.decompress(stream, 15, wanted)
    else:  # stop after the last row asked for: on average a third of the work is skipped
        inflated = zlib.decompressobj().decompress(stream, wanted)
    raw = np.frombuffer(inflated, np.uint8)
    if raw.size != wanted:
        raise ValueError("mask PNG: less pixel data than its rectangles need")
    return raw.reshape(rows_needed, row_bytes + 1)


@njit(cache=True, nogil=True)
def _unfilter(lines: np.ndarray) -> np.ndarray:
    """Scanlines filtered None (first row) then Up -> raw row bytes: a running sum down the rows,
    modulo 256 per byte, as PNG defines it (a few microseconds for a whole image's masks)."""
    out = np.empty((lines.shape[0], lines.shape[1] - 1), np.uint8)
    for i in range(lines.shape[0]):
        if lines[i, 0] != (0 if i == 0 else 2):
            raise ValueError("mask PNG: unexpected row filter")
        for j in range(out.shape[1]):
            value = lines[i, j + 1]
            out[i, j] = value if i == 0 else np.uint8(value + out[i - 1, j])
    return out


@njit(cache=True, nogil=True)
def _fill_runs(raw: np.ndarray, width: int) -> np.ndarray:
    """Unfiltered runs.png rows (big-endian uint16 switch columns, pairs on/off) -> h x width uint8."""
    height, slots = raw.shape[0], raw.shape[1] // 2
    out = np.zeros((height, width), np.uint8)
    for i in range(height):
        for t in range(0, slots - 1, 2):
            start = (np.int64(raw[i, 2 * t]) << 8) | raw[i, 2 * t + 1]
            stop = (np.int64(raw[i, 2 * t + 2]) << 8) | raw[i, 2 * t + 3]
            out[i, min(start, width) : min(stop, width)] = 255  # padding pairs are empty runs
    return out


def decode_mask_crops(data: bytes, rects: np.ndarray, graded: bool, chosen: Sequence[int]) -> list[np.ndarray]:
    """runs.png (binary) or crops.png (graded), and the E x 4 rects -> the chosen masks' crops,
    h x w uint8 0..255."""
    heights = _heights(rects)
    tops = np.concatenate(([0], np.cumsum(heights)))
    raw = _unfilter(_scanlines(data, rects, 8 if graded else 16, int(max(tops[e + 1] for e in chosen))))
    out = []
    for e in chosen:
        width = int(rects[e, 2] - rects[e, 0])
        rows = raw[tops[e] : tops[e + 1]]
        out.append(np.ascontiguousarray(rows[:, :width]) if graded else _fill_runs(rows, width))
    return out


def region_masks(sample_member, rows: np.ndarray, cols: np.ndarray, mask_meta: dict, chosen: Sequence[int]) -> np.ndarray:
    """Full-size k x H x W uint8 masks of the chosen regions of a runs-v1 sample, given the box
    profiles of those same regions (rows[m], cols[m] belong to chosen[m]) and the sample's
    runs.png / crops.png bytes (`sample_member`)."""
    height, width = rows.shape[1], cols.shape[1]
    out = masks.profiles_to_masks(rows, cols, np.arange(len(chosen)))
    mask_of = [mask_meta["mask_of"][k] for k in chosen]
    wanted = sorted({e for e in mask_of if e >= 0})
    if not wanted:
        return out
    rects = rects_of(mask_meta)
    decoded = dict(zip(wanted, decode_mask_crops(sample_member, rects, mask_meta["graded"], wanted)))
    for m, e in enumerate(mask_of):
        if e >= 0:
            x0, y0, x1, y1 = rects[e].tolist()
            out[m] = 0
            out[m, y0:y1, x0:x1] = decoded[e][: min(y1, height) - y0, : min(x1, width) - x0]
    return out


def member_name(mask_meta: dict) -> str:
    """The tar member holding a runs-v1 sample's masks."""
    return keys.MASK_CROPS if mask_meta["graded"] else keys.MASK_RUNS


def encode_masks(
    full_masks: Sequence[np.ndarray | None], sources: Sequence[str], shared: Sequence[int] | None = None,
) -> tuple[dict[str, bytes], dict]:
    """Per region a full-size mask (H x W, bool or uint8) or None (keep the box), and its source
    -> ({member: bytes}, the runs-v1 fields of the JSON's "mask" besides the layout). Both are
    empty when no region has a non-empty mask (the sample stays separable-v1).

    `shared[k]` (optional) is an id per region: regions with the same id >= 0 share one mask
    (e.g. a COCO annotation id), so it is stored once however many regions use it.
    """
    crops: list[np.ndarray] = []
    rects: list[list[int]] = []
    mask_of: list[int] = []
    mask_sources: list[str] = []
    by_id: dict[int, int] = {}
    for k, mask in enumerate(full_masks):
        key = -1 if shared is None else int(shared[k])
        index = by_id.get(key, -1) if key >= 0 else -1
        if index < 0 and mask is not None and (rect := tight_rect(mask)) is not None:
            x0, y0, x1, y1 = rect
            crops.append(np.asarray(mask[y0:y1, x0:x1]))
            rects.append([x0, y0, x1, y1])
            mask_sources.append(sources[k])
            index = len(crops) - 1
            if key >= 0:
                by_id[key] = index
        mask_of.append(index)
    if not crops:
        return {}, {}
    graded = any(c.dtype != np.bool_ and np.any((c != 0) & (c != 255)) for c in crops)
    if graded:
        data = encode_graded([c.astype(np.uint8) * np.uint8(255) if c.dtype == np.bool_ else c.astype(np.uint8) for c in crops])
    else:
        data = encode_runs(crops)
    names = list(dict.fromkeys(mask_sources))
    meta = {"mask_of": mask_of, "rects": [v for rect in rects for v in rect], "sources": names, "graded": graded}
    if len(names) > 1:
        meta["source_of"] = [names.index(s) for s in mask_sources]
    return {member_name(meta): data}, meta


def region_sources(mask_meta: dict, regions: int) -> list[str]:
    """Per region where its mask came from; every region of a box layout is a box."""
    if "mask_of" not in mask_meta:
        return [SOURCE_BOX] * regions
    names = mask_meta["sources"]
    source_of = mask_meta.get("source_of") or [0] * (len(mask_meta["rects"]) // 4)
    return [names[source_of[e]] if e >= 0 else SOURCE_BOX for e in mask_meta["mask_of"]]
