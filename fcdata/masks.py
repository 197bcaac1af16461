"""Region masks: numba rasterisers, and the lossless layouts shards store them in.

Pixel convention: a box (x0, y0, x1, y1) is in continuous pixel coordinates; pixel (i, j) covers
[j, j+1) x [i, i+1). A binary mask holds the pixels whose centre lies in the box
(x0 <= j + 0.5 < x1), and never fewer than one: a box thinner than a pixel keeps the pixel under
its centre, so a tiny region still has an alpha. For integer boxes that is exactly the pixels
x0..x1-1. A soft mask has linear ramps `feather_px` wide centred on each edge (the 50% contour is
the box itself); a ramp is never wider than the box's own side, so a box a few pixels wide still
peaks near 255 instead of fading to a faint blur.

Box masks are separable: mask = row profile (H values) x column profile (W values), both
rasterised here as uint8, combined as (row * col + 127) // 255. That product is the definition of
the mask, for binary (0/255) and soft profiles alike, so storing the two profiles is lossless.

Layout `separable-v1` (see fcdata.keys): `profiles.png`, K rows of H + W values: row k holds
region k's row profile (top to bottom) then its column profile (left to right); 1-bit when every
value is 0 or 255 (binary masks), else 8-bit gray. Fifty regions take about half a KB, and
decoding one region costs one H x W product. Read it with PIL and NumPy alone (H from the image):
    p = np.asarray(Image.open(io.BytesIO(sample["profiles.png"])))
    p = p.astype(np.uint16) * 255 if p.dtype == bool else p.astype(np.uint16)
    masks = (p[:, :H, None] * p[:, None, H:] + 127) // 255           # K x H x W, 0..255
Masks that are not boxes (e.g. from SAM) are not separable and would need a layout of their own;
the reader dispatches on the layout named in the sample's JSON.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Sequence

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def box_pixel_bounds(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """K x 4 float boxes (x0, y0, x1, y1) -> K x 4 int32 half-open pixel ranges, clipped."""
    count = boxes.shape[0]
    bounds = np.empty((count, 4), np.int32)
    limits = (width, height)
    for k in range(count):
        for axis in range(2):
            # float64 before any arithmetic: float32 differences round differently at .5 edges
            low = np.float64(boxes[k, axis])
            high = np.float64(boxes[k, axis + 2])
            first = int(np.ceil(low - 0.5))
            stop = int(np.ceil(high - 0.5))
            if stop <= first:  # thinner than a pixel: keep the pixel under the centre
                first = int(np.floor(0.5 * (low + high)))
                stop = first + 1
            limit = limits[axis]
            bounds[k, axis] = min(max(first, 0), limit)
            bounds[k, axis + 2] = min(max(stop, 0), limit)
    return bounds


@njit(cache=True, nogil=True)
def _soft_ramp(low: float, high: float, out: np.ndarray, feather_px: float) -> None:
    width = max(1.0, min(feather_px, high - low))
    for j in range(out.shape[0]):
        centre = j + 0.5
        value = min(max(min(centre - low, high - centre) / width + 0.5, 0.0), 1.0)
        out[j] = np.uint8(np.floor(255.0 * value + 0.5))


@njit(cache=True, nogil=True)
def box_profiles(
    boxes: np.ndarray, height: int, width: int, feather_px: float
) -> tuple[np.ndarray, np.ndarray]:
    """K x 4 boxes -> (K x H row profiles, K x W column profiles), uint8.

    feather_px = 0 gives binary profiles (0/255, the pixel-centre rule); >= 1 gives soft ramps.
    """
    count = boxes.shape[0]
    rows = np.zeros((count, height), np.uint8)
    cols = np.zeros((count, width), np.uint8)
    if feather_px == 0.0:
        bounds = box_pixel_bounds(boxes, height, width)
        for k in range(count):
            cols[k, bounds[k, 0] : bounds[k, 2]] = 255
            rows[k, bounds[k, 1] : bounds[k, 3]] = 255
    else:
        for k in range(count):
            _soft_ramp(np.float64(boxes[k, 0]), np.float64(boxes[k, 2]), cols[k], feather_px)
            _soft_ramp(np.float64(boxes[k, 1]), np.float64(boxes[k, 3]), rows[k], feather_px)
    return rows, cols


@njit(cache=True, nogil=True)
def profiles_to_masks(rows: np.ndarray, cols: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Profiles -> k x H x W uint8 masks of the chosen region indices: (row * col + 127) // 255."""
    height, width = rows.shape[1], cols.shape[1]
    masks = np.zeros((regions.shape[0], height, width), np.uint8)
    for m in range(regions.shape[0]):
        k = regions[m]
        for i in range(height):
            row_value = np.uint32(rows[k, i])
            if row_value == 0:
                continue
            for j in range(width):
                masks[m, i, j] = (row_value * np.uint32(cols[k, j]) + np.uint32(127)) // np.uint32(255)
    return masks


def rasterize_boxes(boxes: np.ndarray, height: int, width: int, feather_px: float = 0.0) -> np.ndarray:
    """K x 4 boxes -> K x H x W uint8 masks (binary 0/255 when feather_px is 0, else soft)."""
    rows, cols = box_profiles(np.asarray(boxes, np.float32).reshape(-1, 4), height, width, float(feather_px))
    return profiles_to_masks(rows, cols, np.arange(len(rows)))


def encode_png(pixels: np.ndarray, compress_level: int = 1, up_filter: bool = True) -> bytes:
    """A 2-D grayscale array -> PNG bytes (bool -> 1-bit, uint8 -> 8-bit, uint16 -> 16-bit).

    Written directly rather than through PIL, whose encoder took ~10x longer on these small
    images. `up_filter` gives every row PNG's Up filter (each byte minus the byte above), which
    turns repeated rows into zeros; rows unrelated to the row above (profiles of different
    regions) compress better unfiltered.
    """
    if pixels.ndim != 2 or pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise ValueError(f"encode_png needs a non-empty 2-D array, got shape {pixels.shape}")
    height, width = pixels.shape
    if pixels.dtype == np.bool_:
        bit_depth, rows = 1, np.packbits(pixels, axis=1)
    elif pixels.dtype == np.uint8:
        bit_depth, rows = 8, np.ascontiguousarray(pixels)
    elif pixels.dtype == np.uint16:
        big_endian = np.ascontiguousarray(pixels, dtype=">u2")
        bit_depth, rows = 16, big_endian.view(np.uint8).reshape(height, 2 * width)
    else:
        raise ValueError(f"encode_png takes bool, uint8 or uint16 pixels, got {pixels.dtype}")
    filtered = np.empty((height, rows.shape[1] + 1), np.uint8)
    if up_filter:
        filtered[:, 0] = 2  # PNG filter type "Up"
        filtered[0, 1:] = rows[0]
        np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
    else:
        filtered[:, 0] = 0  # PNG filter type "None"
        filtered[:, 1:] = rows
    return _png_bytes(filtered, width, height, bit_depth, compress_level)


def _png_bytes(
    scanlines: np.ndarray, width: int, height: int, bit_depth: int, compress_level: int,
    strategy: int = zlib.Z_DEFAULT_STRATEGY,
) -> bytes:
    """Filtered scanlines (a filter byte, then the row's bytes) -> a grayscale PNG file."""
    compressor = zlib.compressobj(compress_level, zlib.DEFLATED, 15, 9, strategy)
    header = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", compressor.compress(scanlines.tobytes()) + compressor.flush()),
            _png_chunk(b"IEND", b""),
        )
    )


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def decode_png(data: bytes, rows: Sequence[int] | None = None) -> np.ndarray:
    """PNG bytes -> array (bool for 1-bit, uint8, or uint16 gray). Grayscale PNGs whose rows use
    only the None and Up filters (what encode_png writes) are decoded here, ~7x faster than PIL on
    these small images; anything else goes through PIL."""
    pixels = _decode_simple_png(data, rows)
    if pixels is not None:
        return pixels
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        pixels = np.asarray(image)
    return pixels if rows is None else pixels[list(rows)]


def png_parts(data: bytes) -> tuple[tuple[int, int, int, int, int], bytes] | None:
    """((width, height, bit depth, colour type, interlace), the zlib stream of the IDAT chunks),
    or None if `data` is not a PNG."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    width, height, bit_depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    compressed, offset = [], 8
    while offset + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if kind == b"IDAT":
            compressed.append(data[offset + 8 : offset + 8 + length])
        elif kind == b"IEND":
            break
        offset += 12 + length
    stream = compressed[0] if len(compressed) == 1 else b"".join(compressed)
    return (width, height, bit_depth, colour_type, interlace), stream


def _decode_simple_png(data: bytes, selected: Sequence[int] | None = None) -> np.ndarray | None:
    parts = png_parts(data)
    if parts is None:
        return None
    (width, height, bit_depth, colour_type, interlace), stream = parts
    if colour_type != 0 or interlace != 0 or bit_depth not in (1, 8, 16):
        return None
    row_bytes = (width * bit_depth + 7) // 8
    try:
        raw = np.frombuffer(zlib.decompress(stream), np.uint8)
    except zlib.error:
        return None
    if raw.size != height * (row_bytes + 1):
        return None
    rows = raw.reshape(height, row_bytes + 1)
    filters = rows[:, 0]
    if np.any((filters != 0) & (filters != 2)):
        return None  # Sub, Average or Paeth rows: leave them to PIL
    scanlines = rows[:, 1:]
    if filters.any():
        # Up adds the byte above; a running sum down the rows, where rows without it restart it.
        scanlines = scanlines.copy()
        for row in np.flatnonzero(filters == 2).tolist():
            if row:
                scanlines[row] += scanlines[row - 1]
    if selected is not None:
        scanlines = scanlines[list(selected)]
    if bit_depth == 1:
        return np.unpackbits(scanlines, axis=1, count=width).astype(np.bool_)
    if bit_depth == 16:
        return scanlines.view(">u2").astype(np.uint16)
    return np.ascontiguousarray(scanlines)


@njit(cache=True, nogil=True)
def _binary_profile_scanlines(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """K 1-bit PNG scanlines of [row profile | column profile]: filter byte 0, then the bits MSB
    first. One pass instead of concatenate + compare + packbits + filter in NumPy."""
    count, height = rows.shape
    total = height + cols.shape[1]
    lines = np.zeros((count, 1 + (total + 7) // 8), np.uint8)
    for k in range(count):
        for j in range(total):
            value = rows[k, j] if j < height else cols[k, j - height]
            if value:
                lines[k, 1 + (j >> 3)] |= np.uint8(0x80 >> (j & 7))
    return lines


def encode_profiles(rows: np.ndarray, cols: np.ndarray, binary: bool) -> bytes:
    """Row and column profiles -> profiles.png; `binary` profiles (only 0/255) are stored 1-bit."""
    if rows.shape[0] == 0:
        raise ValueError("no regions: nothing to encode")
    if binary:
        lines = _binary_profile_scanlines(rows, cols)
        return _png_bytes(lines, rows.shape[1] + cols.shape[1], rows.shape[0], 1, 1)
    return encode_png(np.concatenate((rows, cols), axis=1), up_filter=False)


def decode_profiles(data: bytes, height: int, regions: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """profiles.png -> (k x H rows, k x W cols) uint8 of the given region indices (all if None):
    a loader needs 2 of ~50, and unpacking only those halves the cost."""
    profiles = decode_png(data, regions)
    profiles = profiles.astype(np.uint8) * np.uint8(255) if profiles.dtype == np.bool_ else profiles
    return profiles[:, :height], profiles[:, height:]
