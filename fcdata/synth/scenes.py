"""What one synthetic image shows (3-6 distinct objects on a photo-like background) and its pixels.

Runs in worker processes, so everything here is module-level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image


# name -> RGB; far enough apart that the nearest name of a shaded, textured pixel is its own.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (205, 30, 35),
    "green": (40, 155, 55),
    "blue": (35, 70, 205),
    "yellow": (240, 215, 40),
    "purple": (130, 45, 170),
    "orange": (245, 135, 25),
    "white": (242, 242, 236),
    "black": (22, 22, 26),
    "pink": (245, 135, 185),
    "brown": (115, 70, 30),
}
# shape -> WordNet synset written to objects.json; None: no sense fits, the key is omitted (v1.4).
SHAPES: dict[str, str | None] = {
    "circle": "circle.n.01",
    "square": "square.n.01",
    "triangle": "triangle.n.01",
    "star": "star.n.03",
    "hexagon": "hexagon.n.01",
    "ellipse": "ellipse.n.01",
    "diamond": None,
    "cross": None,
}
TEXTURES = ("plain", "striped", "dotted", "checkered")
# (width, height) ratios of VG photos, the common landscape 4:3 listed twice to weight it.
ASPECT_RATIOS = ((4, 3), (4, 3), (3, 4), (16, 9), (3, 2), (2, 3), (1, 1), (9, 16))
OBJECTS_PER_IMAGE = (3, 6)  # inclusive; the grid below has 6 cells, one object per cell
LARGE_OBJECT_FRACTION = 0.25  # "large" from this longer box side / shorter image side on
STAR_INNER = 0.45  # inner corner radius of the star; fatter than a classic star's 0.38
# Pattern pixels move this far towards mid grey (so black and white objects get patterns too);
# with the shading below a pixel stays nearer its own colour than any other in COLOURS.
TEXTURE_CONTRAST = 0.25
SHADING = 0.08  # brightness change per unit of the normalised coordinate along the light
BLOTCHES = 0.03  # amplitude of the object's smooth brightness noise
SENSOR_NOISE_BITS = 3  # per-pixel noise is the sum of two uniform 3-bit draws, centred: +-7
# Amplitudes (grey levels) of noise octaves with 2, 4, 8, ... cells across; the fine ones make
# the "ground" texture that gives JPEGs a photo's size.
BACKGROUND_OCTAVES = (34.0, 20.0, 12.0, 10.0, 10.0, 12.0, 12.0)
# Streams of SeedSequence([seed, stream, ...]): independent draws that never collide.
_PLAN_STREAM, _IMAGE_STREAM, _COCO_STREAM = 0, 1, 2
Box = tuple[int, int, int, int]  # x, y, width, height in 0-based pixels


@dataclass(frozen=True)
class SceneObject:
    colour: str
    shape: str
    texture: str
    size_word: str  # "small" or "large", from the rendered size
    position: str  # "top left", "centre", ...: where the box centre is
    box: Box

    @property
    def label(self) -> str:
        return f"{self.colour} {self.shape}"


@dataclass(frozen=True)
class SceneRegion:
    phrase: str
    box: Box


@dataclass(frozen=True)
class SceneRelation:
    subject: int  # index into RenderedImage.objects
    predicate: str
    object: int


@dataclass(frozen=True)
class RenderedImage:
    """An image's annotations in neutral form; ids and field names are added by the writer."""

    image_id: int
    width: int
    height: int
    coco_id: int | None
    flickr_id: int | None
    objects: tuple[SceneObject, ...]
    regions: tuple[SceneRegion, ...]  # the object regions first, in object order
    relations: tuple[SceneRelation, ...]
    coco: dict | None = None  # COCO "image" record plus its "annotations" (no ids), if a COCO photo


def min_region_side(short_side: int) -> int:
    """The smallest side of a generated region: 6.4+ px after the sharder's resize to 256."""
    return max(8, math.ceil(short_side / 40))


def _image_size(rng: np.random.Generator, long_side_px: tuple[int, int]) -> tuple[int, int]:
    long_side = int(rng.integers(long_side_px[0], long_side_px[1] + 1))
    ratio_w, ratio_h = ASPECT_RATIOS[rng.integers(len(ASPECT_RATIOS))]
    if ratio_w >= ratio_h:
        return long_side, round(long_side * ratio_h / ratio_w)
    return round(long_side * ratio_w / ratio_h), long_side


def _render_scene(
    rng: np.random.Generator, width: int, height: int, object_masks: list[np.ndarray]
) -> tuple[np.ndarray, tuple[SceneObject, ...]]:
    """Photo-like background, then 3-6 distinct objects, one per grid cell, then sensor noise.
    Each object's true mask (H x W bool) is appended to `object_masks`."""
    canvas = _background(rng, width, height)  # (H, W, 3) int16
    colours, shapes = list(COLOURS), list(SHAPES)
    count = int(rng.integers(OBJECTS_PER_IMAGE[0], OBJECTS_PER_IMAGE[1] + 1))
    kinds = rng.choice(len(colours) * len(shapes), size=count, replace=False)  # distinct pairs
    cols, rows = (3, 2) if width >= height else (2, 3)
    cells = rng.permutation(cols * rows)[:count]
    objects = []
    for kind, cell in zip(kinds.tolist(), cells.tolist()):  # Python ints: they end up in JSON
        colour, shape = colours[kind // len(shapes)], shapes[kind % len(shapes)]
        cell_x, cell_y = (cell % cols) * width // cols, (cell // cols) * height // rows
        cell_box = (cell_x, cell_y, width // cols, height // rows)
        objects.append(_paint_object(rng, canvas, colour, shape, cell_box, object_masks))
    # Sensor noise from raw bytes: triangular in +-7 per channel, 2.5x cheaper than rng.integers.
    noise = np.frombuffer(rng.bytes(canvas.size), np.uint8).reshape(canvas.shape)
    low_bits = (1 << SENSOR_NOISE_BITS) - 1
    canvas += (noise & low_bits).astype(np.int16) + ((noise >> 4) & low_bits) - low_bits
    return np.clip(canvas, 0, 255).astype(np.uint8), tuple(objects)


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Multi-octave smooth noise and a gradient over a muted base colour, as (H, W, 3) int16.

    Built at quarter resolution and upsampled once: full-resolution octaves cost 10x more and the
    sensor noise added later supplies the per-pixel detail anyway.
    """
    low_w, low_h = max(2, width // 4), max(2, height // 4)
    base = rng.uniform(70, 190, size=3).astype(np.float32)
    tint = rng.uniform(-15, 15, size=3).astype(np.float32)
    luminance = np.zeros((low_h, low_w), np.float32)
    for octave, amplitude in enumerate(BACKGROUND_OCTAVES):
        cells = 2 << octave  # 2, 4, 8, ... noise cells across the image
        grid = rng.standard_normal((max(2, cells * height // width), cells), dtype=np.float32)
        luminance += amplitude * _upsample(grid, low_w, low_h)
    chroma = _upsample(rng.standard_normal((3, 4), dtype=np.float32), low_w, low_h)
    ys = np.linspace(-0.5, 0.5, low_h, dtype=np.float32)[:, None]
    xs = np.linspace(-0.5, 0.5, low_w, dtype=np.float32)[None, :]
    slope_y, slope_x = rng.uniform(-60, 60), rng.uniform(-30, 30)
    luminance += slope_y * ys + slope_x * xs
    low = base + luminance[..., None] + chroma[..., None] * tint  # (h, w, 3)
    low_image = Image.fromarray(np.clip(low, 0, 255).astype(np.uint8))
    return np.asarray(low_image.resize((width, height), Image.Resampling.BICUBIC), np.int16)


def _upsample(field_: np.ndarray, width: int, height: int) -> np.ndarray:
    image = Image.fromarray(field_.astype(np.float32))  # mode "F"
    return np.asarray(image.resize((width, height), Image.Resampling.BICUBIC))


def _paint_object(
    rng: np.random.Generator, canvas: np.ndarray, colour: str, shape: str, cell: Box,
    object_masks: list[np.ndarray],
) -> SceneObject:
    """Paint one shaded, textured shape inside `cell` and return it with its tight box; its mask
    goes to `object_masks`."""
    height, width = canvas.shape[:2]
    short_side = min(width, height)
    cell_x, cell_y, cell_w, cell_h = cell
    angle = 0.0 if shape == "circle" else float(rng.uniform(-0.35, 0.35))  # radians, about 20 deg
    # A square frame of side `frame` holds the rotated shape; it must fit the cell.
    spread = abs(math.cos(angle)) + abs(math.sin(angle))
    largest = 0.95 * min(cell_w, cell_h) / spread
    smallest = min(largest, max(2.5 * min_region_side(short_side), 0.08 * short_side))
    side = math.exp(rng.uniform(math.log(smallest), math.log(largest)))
    frame = max(2, math.ceil(side * spread))
    frame_x = cell_x + int(rng.integers(0, cell_w - frame + 1))
    frame_y = cell_y + int(rng.integers(0, cell_h - frame + 1))

    # Normalised shape coordinates: (u, v) in [-1, 1] span the unrotated shape.
    centre = (frame - 1) / 2
    offsets = (np.arange(frame, dtype=np.float32) - centre) / (side / 2)
    dy, dx = offsets[:, None], offsets[None, :]
    u = dx * math.cos(angle) + dy * math.sin(angle)
    v = -dx * math.sin(angle) + dy * math.cos(angle)
    if shape == "ellipse":
        v = v / rng.uniform(0.55, 0.75)  # the minor axis is 55-75% of the major
    mask = _shape_mask(shape, u, v)

    texture = TEXTURES[rng.integers(len(TEXTURES))]
    pattern = _texture_pattern(rng, texture, frame)
    light_x, light_y = rng.uniform(-1, 1, size=2)
    shading = 1.0 + SHADING * np.clip(u * light_x + v * light_y, -1.5, 1.5)
    noise = _upsample(rng.standard_normal((4, 4), dtype=np.float32), frame, frame)
    blotches = 1.0 + BLOTCHES * noise
    rgb = np.array(COLOURS[colour], np.float32)
    mixed = rgb + TEXTURE_CONTRAST * pattern[..., None] * (128.0 - rgb)  # (frame, frame, 3)
    pixels = mixed * (shading * blotches)[..., None]

    region = canvas[frame_y:frame_y + frame, frame_x:frame_x + frame]  # a view: painted in place
    region[mask] = np.clip(pixels[mask], 0, 255).astype(np.int16)
    full_mask = np.zeros((height, width), bool)
    full_mask[frame_y:frame_y + frame, frame_x:frame_x + frame] = mask
    object_masks.append(full_mask)

    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = (
        frame_x + int(cols[0]), frame_y + int(rows[0]),
        int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1),
    )
    size_word = "large" if max(box[2], box[3]) >= LARGE_OBJECT_FRACTION * short_side else "small"
    return SceneObject(colour, shape, texture, size_word, _position_words(box, width, height), box)


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    au, av = np.abs(u), np.abs(v)
    if shape in ("circle", "ellipse"):
        return u * u + v * v <= 1
    if shape == "square":
        return np.maximum(au, av) <= 1
    if shape == "triangle":  # apex up: v runs from -1 (top) to 1 (bottom)
        return (v <= 1) & (au <= (v + 1) / 2)
    if shape == "diamond":
        return au + av <= 1
    if shape == "hexagon":
        return (av <= math.sqrt(3) / 2) & (math.sqrt(3) * au + av <= math.sqrt(3))
    if shape == "cross":
        return ((au <= 1 / 3) & (av <= 1)) | ((av <= 1 / 3) & (au <= 1))
    if shape == "star":  # five points at radius 1, straight edges to inner corners at STAR_INNER
        half = math.pi / 5  # angle from a point to the next inner corner
        from_point = np.abs((np.arctan2(u, -v) + half) % (2 * half) - half)  # in [0, half]
        # Polar form of the straight edge from (1, angle 0) to (STAR_INNER, angle `half`).
        edge = STAR_INNER * math.sin(half) / (
            STAR_INNER * math.sin(half) * np.cos(from_point)
            + (1 - STAR_INNER * math.cos(half)) * np.sin(from_point)
        )
        return np.hypot(u, v) <= edge
    raise ValueError(f"unknown shape {shape!r}")


def _texture_pattern(rng: np.random.Generator, texture: str, frame: int) -> np.ndarray:
    """1 where the pattern is drawn, 0 elsewhere, as a (frame, frame) float32 array."""
    period = max(4.0, frame / rng.uniform(4, 7))
    ys, xs = np.mgrid[0:frame, 0:frame].astype(np.float32)
    if texture == "striped":
        angle = rng.uniform(0, math.pi)
        along = xs * math.cos(angle) + ys * math.sin(angle)
        return ((along % period) < period / 2).astype(np.float32)
    if texture == "dotted":
        cx, cy = xs % period - period / 2, ys % period - period / 2
        return (cx * cx + cy * cy <= (period / 4) ** 2).astype(np.float32)
    if texture == "checkered":
        return ((np.floor(xs / period) + np.floor(ys / period)) % 2).astype(np.float32)
    return np.zeros((frame, frame), np.float32)


def _position_words(box: Box, width: int, height: int) -> str:
    x, y, w, h = box
    column = ("left", "", "right")[min(2, int(3 * (x + w / 2) / width))]
    row = ("top", "", "bottom")[min(2, int(3 * (y + h / 2) / height))]
    return " ".join(word for word in (row, column) if word) or "centre"
