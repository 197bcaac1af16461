"""A synthetic Visual Genome: same layout and field names, scenes where the region matters.

Layout written under the output folder (exactly Visual Genome's):

    image_data.json  region_descriptions.json  objects.json  relationships.json
    VG_100K/{image_id}.jpg  VG_100K_2/{image_id}.jpg      (odd ids in the first, even in the second)
    synth_report.json                                     (what was written and injected)

Every file is written under a temporary name and renamed into place; synth_report.json comes last,
so its presence marks a finished dataset.

Each image shows 3-6 distinct objects: no two share (colour, shape), so a phrase such as
"a small red triangle" names one object and cannot be guessed from the whole image. There is one
region per object whose box is the object's tight bounding box (0-based integer pixels, x + width
<= image width). `regions_per_image` adds relational regions ("the red circle left of the blue
square", union box), part regions ("the left half of the red circle") and background patches
("a mottled patch of ground near the top left", box sides log-uniform from the minimum region side
to most of the image). Every phrase of an image is unique ignoring case.

Field names by `version` (each release's variant, so a parser meets every spelling in the wild):

    field of             1.0                   1.2                     1.4
    image_data record    id, image_url         image_id, url           image_id, url
    region               id, image             region_id, image_id     region_id, image_id
    objects record       id                    image_id                image_id
    object               id, name (a str),     object_id, name,        object_id, names (a list),
                         no synsets            synsets (a list)        synsets (omitted for shapes
                                                                       without a WordNet sense)
    relationships record id                    image_id                image_id
    relationship         id                    relationship_id         relationship_id
    subject / object     the version's object fields, plus `name` where it has only `names`

Region description records are {"id": image_id, "regions": [...]} in every release, as in VG.
URLs point at the old "https://cs.stanford.edu/people/rak248/VG_100K/{id}.jpg" for every image,
including those stored in VG_100K_2/: consumers must look in the folders, not parse the URL.

Image ids are 1, 2, 3, ... skipping `KNOWN_CORRUPT_IMAGE_IDS`, so a clean dataset loses nothing
to the sharder's known-corrupt list. With `quirks` the last image listed gets id 1592 instead.

`quirks` injects Visual Genome's real defects, each a fixed number of times, on distinct images
chosen by the seed; the report counts them under the names of `fcdata.reasons`:

    images (one each):  missing (listed, no file), truncated (first 40% of a JPEG), undecodable
                        (an HTML error page plus random bytes), known_corrupt (id 1592, a valid
                        JPEG), no_regions (an empty regions list), grayscale (L JPEG), cmyk (CMYK
                        JPEG), format_mismatch x2 (an RGB PNG and a palette PNG named .jpg),
                        palette (that palette PNG), size_mismatch (image_data states twice the size)
    regions:            whitespace x3 (leading/trailing spaces, a tab, a newline), empty_phrase,
                        empty_box x2 (zero width, negative height), outside_image (x beyond the
                        width), clipped (x < 0, partly inside), too_small (2 x 2 px), duplicate
                        (an earlier region's phrase in title case, box shifted 1-2 px, IoU >= 0.75),
                        bad_record x2 (no `phrase` key; x = "abc"), long_phrase (about 400
                        characters), no_image_record (a regions record for an unlisted image id:
                        its 3 regions)
    big_region_ids:     two regions of a clean image get ids above 2**32 (as in VG)

Region quirks sit on images without an image quirk, and their phrases repeat no other phrase except
the one intended duplicate. The counts assume the sharder's defaults, and trigger with margin:
images stored with a shorter side of 256 px (never upscaled), boxes need 4 stored px per side
(every generated box keeps at least 6.4; the too_small box keeps under 2), duplicates need IoU
above 0.7, phrases are cut at 200 characters. Fix counts only cover regions the sharder keeps.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import math
import multiprocessing
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from fcdata.options import SynthOptions
from fcdata.outputs import check_output_dir
from fcdata.reasons import (
    DROP_BAD_RECORD,
    DROP_DUPLICATE,
    DROP_EMPTY_BOX,
    DROP_EMPTY_PHRASE,
    DROP_NO_IMAGE_RECORD,
    DROP_OUTSIDE_IMAGE,
    DROP_TOO_SMALL,
    FIX_CLIPPED,
    FIX_CMYK,
    FIX_FORMAT_MISMATCH,
    FIX_GRAYSCALE,
    FIX_LONG_PHRASE,
    FIX_PALETTE,
    FIX_SIZE_MISMATCH,
    FIX_WHITESPACE,
    IMAGE_FIXES,
    IMAGE_SKIPS,
    KNOWN_CORRUPT_IMAGE_IDS,
    REGION_DROPS,
    REGION_FIXES,
    SKIP_KNOWN_CORRUPT,
    SKIP_MISSING,
    SKIP_NO_REGIONS,
    SKIP_TRUNCATED,
    SKIP_UNDECODABLE,
)
from fcdata.workers import init_worker, sigint_ignored

IMAGE_FOLDERS = ("VG_100K", "VG_100K_2")
ANNOTATION_FILES = (
    "image_data.json", "region_descriptions.json", "objects.json", "relationships.json",
)
REPORT_FILE = "synth_report.json"
OLD_URL_PREFIX = "https://cs.stanford.edu/people/rak248/VG_100K/"

KNOWN_CORRUPT_QUIRK_ID = 1592
BIG_REGION_IDS = (900100184613, 900100184614)  # the first is a real VG region id

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
TEXTURE_NOUNS = {"plain": "", "striped": "stripes", "dotted": "dots", "checkered": "checks"}
# (width, height) ratios of VG photos, the common landscape 4:3 listed twice to weight it.
ASPECT_RATIOS = ((4, 3), (4, 3), (3, 4), (16, 9), (3, 2), (2, 3), (1, 1), (9, 16))
JPEG_QUALITY = (85, 92)  # inclusive range, drawn per image
OBJECTS_PER_IMAGE = (3, 6)  # inclusive; the grid below has 6 cells, one object per cell
LARGE_OBJECT_FRACTION = 0.25  # "large" from this longer box side / shorter image side on
STAR_INNER = 0.45  # inner corner radius of the star; fatter than a classic star's 0.38
# Pattern pixels move this far towards mid grey (so black and white objects get patterns too);
# with the shading below a pixel stays nearer its own colour than any other in COLOURS.
TEXTURE_CONTRAST = 0.25
SHADING = 0.08  # brightness change per unit of the normalised coordinate along the light
BLOTCHES = 0.03  # amplitude of the object's smooth brightness noise
SENSOR_NOISE_BITS = 3  # per-pixel noise is the sum of two uniform 3-bit draws, centred: +-7
TRUNCATE_FRACTION = 0.4
# Random bytes alone can pass the header check of formats with no magic number (e.g. TGA);
# an HTML error page, which is what failed downloads really contain, cannot.
GARBAGE_PREFIX = b"<html><head><title>404 Not Found</title></head><body>Not Found</body></html>\n"

# Amplitudes (grey levels) of noise octaves with 2, 4, 8, ... cells across; the fine ones make
# the "ground" texture that gives JPEGs a photo's size.
BACKGROUND_OCTAVES = (34.0, 20.0, 12.0, 10.0, 10.0, 12.0, 12.0)
BACKGROUND_ADJECTIVES = (
    "rough", "smooth", "mottled", "dark", "bright", "blurry", "speckled", "faded", "grey", "sandy",
    "dusty", "wet",
)
BACKGROUND_SURFACES = ("ground", "wall", "background", "surface", "pavement")
LONG_PHRASE_CLAUSES = (
    "that sits on a rough and speckled piece of ground",
    "drawn with soft shading from a light on one side",
    "with a thin and slightly blurred outline around its edges",
    "in a photo that looks a little out of focus near the corners",
    "seen from straight above on a cloudy afternoon",
    "which someone clearly painted by hand with a wide brush",
)

# Image-level quirks: the file on disk or the image's records is wrong. Each on its own image.
FILE_QUIRKS = (
    SKIP_MISSING, SKIP_TRUNCATED, SKIP_UNDECODABLE, FIX_GRAYSCALE, FIX_CMYK, FIX_FORMAT_MISMATCH,
    FIX_PALETTE,
)
RECORD_QUIRKS = (SKIP_NO_REGIONS, FIX_SIZE_MISMATCH)
BIG_REGION_IDS_QUIRK = "big_region_ids"
# Region-level quirks, each on its own otherwise clean image.
REGION_QUIRKS = (
    FIX_WHITESPACE, DROP_EMPTY_PHRASE, DROP_EMPTY_BOX, DROP_OUTSIDE_IMAGE, FIX_CLIPPED,
    DROP_TOO_SMALL, DROP_DUPLICATE, DROP_BAD_RECORD, FIX_LONG_PHRASE, BIG_REGION_IDS_QUIRK,
)
REGION_FIELDS = ("phrase", "x", "y", "width", "height")  # after the id keys, in VG's order
ORPHAN_REGIONS = 3  # regions in the record whose image id is not in image_data.json

# Streams of SeedSequence([seed, stream, ...]): independent draws that never collide.
_PLAN_STREAM, _IMAGE_STREAM, _COCO_STREAM = 0, 1, 2
COCO_ID_BASE = 100_000  # coco_id = base + image id: unique, as VG's are

Box = tuple[int, int, int, int]  # x, y, width, height in 0-based pixels


@dataclass
class SynthReport:
    """What `generate_vg` wrote; the expected_* fields are what the sharder should keep."""

    options: SynthOptions
    images_written: int = 0  # records in image_data.json (all on disk but the `missing` one)
    regions_written: int = 0  # region entries in region_descriptions.json, defective ones included
    quirks: dict[str, int] = field(default_factory=dict)  # reason -> count; empty without quirks
    big_region_ids: list[int] = field(default_factory=list)
    expected_images_kept: int = 0  # images the sharder writes under its defaults
    expected_regions_kept: int = 0  # regions of those images that survive its filters
    coco_images: int = 0  # images described in coco_instances.json (their objects' true masks)

    def to_json(self) -> str:
        fields = dataclasses.asdict(self)
        fields["options"] = self.options.output_affecting()
        return json.dumps(fields, indent=2) + "\n"


# ---------------------------------------------------------------------------------------------
# One image: scene, pixels, file. Runs in worker processes, so everything here is module-level.


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


@dataclass(frozen=True)
class _ImageTask:
    out_dir: Path
    options: SynthOptions
    image_id: int
    file_quirk: str | None  # one of FILE_QUIRKS, or None for a normal JPEG


def image_path(out_dir: Path, image_id: int) -> Path:
    """Where image `image_id` is stored: odd ids in VG_100K/, even ids in VG_100K_2/."""
    return out_dir / IMAGE_FOLDERS[1 - image_id % 2] / f"{image_id}.jpg"


def min_region_side(short_side: int) -> int:
    """The smallest side of a generated region: 6.4+ px after the sharder's resize to 256."""
    return max(8, math.ceil(short_side / 40))


def _render_task(task: _ImageTask) -> RenderedImage:
    """Draw one image's scene and annotations, and write its file (or, for `missing`, none)."""
    rng = np.random.default_rng([task.options.seed, _IMAGE_STREAM, task.image_id])
    width, height = _image_size(rng, task.options.long_side_px)
    object_masks: list[np.ndarray] = []
    pixels, objects = _render_scene(rng, width, height, object_masks)
    coco_id = None
    if rng.random() < 0.5:
        # The id derives from the image id, since random ids collide and two VG images must never
        # name one COCO photo; the old random id is still drawn so that every later draw stays.
        rng.integers(1, 600_000)
        coco_id = COCO_ID_BASE + task.image_id
    rendered = RenderedImage(
        image_id=task.image_id,
        width=width,
        height=height,
        coco_id=coco_id,
        flickr_id=int(rng.integers(10**8, 10**10)) if rng.random() < 0.8 else None,
        objects=objects,
        regions=_scene_regions(rng, objects, width, height, task.options.regions_per_image),
        relations=_scene_relations(rng, objects),
        coco=None if coco_id is None else _coco_record(task, coco_id, width, height, object_masks),
    )
    # Drawn last, so that a file quirk changes the file and nothing else.
    quality = int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))
    data = _file_bytes(Image.fromarray(pixels), task.file_quirk, quality, rng)
    path = image_path(task.out_dir, task.image_id)
    if data is None:
        path.unlink(missing_ok=True)  # a file from an earlier run would hide the quirk
    else:
        _write_atomic(path, data)
    return rendered


def _coco_record(task: _ImageTask, coco_id: int, width: int, height: int, object_masks: list[np.ndarray]) -> dict:
    from fcdata import synth_coco

    rng = np.random.default_rng([task.options.seed, _COCO_STREAM, task.image_id])
    coco_width, coco_height, scale = synth_coco.coco_size(rng, width, height)
    return {
        "image": {"id": coco_id, "width": coco_width, "height": coco_height, "file_name": f"{coco_id:012d}.jpg"},
        "annotations": synth_coco.instance_records(rng, object_masks, coco_width, coco_height, scale),
    }


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


def _object_phrase(rng: np.random.Generator, obj: SceneObject) -> str:
    """One of several VG-like templates; every one names the (unique) colour and shape."""
    texture_adjective = "" if obj.texture == "plain" else obj.texture
    texture_noun = TEXTURE_NOUNS[obj.texture]
    templates = (
        ("a", obj.size_word, obj.colour, obj.shape),
        ("the", obj.colour, texture_adjective, obj.shape),
        (obj.colour, obj.shape),
        ("a", obj.size_word, texture_adjective, obj.colour, obj.shape),
        (obj.colour, obj.shape, "in the", obj.position),
        ("the", obj.shape, "is", obj.colour),
        ("a", obj.colour, obj.shape, "with", texture_noun) if texture_noun
        else ("a plain", obj.colour, obj.shape),
    )
    phrase = " ".join(word for word in templates[rng.integers(len(templates))] if word)
    # About a quarter of VG phrases start with a capital.
    return phrase[0].upper() + phrase[1:] if rng.random() < 0.25 else phrase


def _spatial_predicate(subject: Box, obj: Box) -> str:
    """"next to" when the boxes nearly touch, else the dominant direction between centres."""
    sx, sy, sw, sh = subject
    ox, oy, ow, oh = obj
    gap_x = max(ox - (sx + sw), sx - (ox + ow), 0)
    gap_y = max(oy - (sy + sh), sy - (oy + oh), 0)
    if max(gap_x, gap_y) < 0.15 * (sw + sh + ow + oh) / 4:
        return "next to"
    dx = (ox + ow / 2) - (sx + sw / 2)
    dy = (oy + oh / 2) - (sy + sh / 2)
    if abs(dx) >= abs(dy):
        return "left of" if dx > 0 else "right of"
    return "above" if dy > 0 else "below"


def _union(a: Box, b: Box) -> Box:
    x0, y0 = min(a[0], b[0]), min(a[1], b[1])
    x1, y1 = max(a[0] + a[2], b[0] + b[2]), max(a[1] + a[3], b[1] + b[3])
    return x0, y0, x1 - x0, y1 - y0


def _part_regions(obj: SceneObject) -> list[SceneRegion]:
    x, y, w, h = obj.box
    parts = (
        ("left half", (x, y, w // 2, h)),
        ("right half", (x + w - w // 2, y, w // 2, h)),
        ("top half", (x, y, w, h // 2)),
        ("bottom half", (x, y + h - h // 2, w, h // 2)),
        ("centre", (x + w // 4, y + h // 4, w // 2, h // 2)),
    )
    return [SceneRegion(f"the {part} of the {obj.label}", box) for part, box in parts]


def _relational_regions(objects: tuple[SceneObject, ...]) -> list[SceneRegion]:
    return [
        SceneRegion(
            f"the {a.label} {_spatial_predicate(a.box, b.box)} the {b.label}", _union(a.box, b.box)
        )
        for a, b in itertools.permutations(objects, 2)
    ]


def _background_region(rng: np.random.Generator, width: int, height: int) -> SceneRegion:
    """A patch whose side is log-uniform from the minimum region side to most of the image."""
    smallest = min_region_side(min(width, height))
    side = math.exp(rng.uniform(math.log(smallest), math.log(0.95 * min(width, height))))
    stretch = math.exp(rng.uniform(-0.5, 0.5))
    w = int(np.clip(round(side * stretch), smallest, width))
    h = int(np.clip(round(side / stretch), smallest, height))
    box = (int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h)
    adjective = BACKGROUND_ADJECTIVES[rng.integers(len(BACKGROUND_ADJECTIVES))]
    surface = BACKGROUND_SURFACES[rng.integers(len(BACKGROUND_SURFACES))]
    where = _position_words(box, width, height)
    place = "in the centre" if where == "centre" else f"near the {where}"
    return SceneRegion(f"a {adjective} patch of {surface} {place}", box)


def _scene_regions(
    rng: np.random.Generator,
    objects: tuple[SceneObject, ...],
    width: int,
    height: int,
    regions_per_image: int,
) -> tuple[SceneRegion, ...]:
    """One region per object, then relational, part and background regions up to the target.

    Extra regions are drawn from shuffled pools (each phrase once) and background patches, whose
    phrases are re-drawn until new; a candidate smaller than the minimum side is passed over.
    """
    regions = [SceneRegion(_object_phrase(rng, obj), obj.box) for obj in objects]
    smallest = min_region_side(min(width, height))
    pools = [_relational_regions(objects), [p for obj in objects for p in _part_regions(obj)]]
    for pool in pools:
        rng.shuffle(pool)
    seen = {region.phrase.lower() for region in regions}
    # Enough draws for every pool phrase plus rejections; the background vocabulary has 540.
    for _ in range(8 * max(0, regions_per_image - len(regions))):
        if len(regions) >= regions_per_image:
            break
        pick = rng.random()
        if pick < 0.3 and pools[0]:
            candidate = pools[0].pop()
        elif pick < 0.6 and pools[1]:
            candidate = pools[1].pop()
        else:
            candidate = _background_region(rng, width, height)
        if min(candidate.box[2:]) >= smallest and candidate.phrase.lower() not in seen:
            seen.add(candidate.phrase.lower())
            regions.append(candidate)
    return tuple(regions)


def _scene_relations(
    rng: np.random.Generator, objects: tuple[SceneObject, ...]
) -> tuple[SceneRelation, ...]:
    pairs = list(itertools.permutations(range(len(objects)), 2))
    count = min(len(pairs), int(rng.integers(len(objects) - 1, 2 * len(objects))))
    chosen = sorted(rng.choice(len(pairs), size=count, replace=False))
    return tuple(
        SceneRelation(a, _spatial_predicate(objects[a].box, objects[b].box), b)
        for a, b in (pairs[i] for i in chosen)
    )


def _file_bytes(
    image: Image.Image, file_quirk: str | None, quality: int, rng: np.random.Generator
) -> bytes | None:
    """The bytes stored as {image_id}.jpg; None means no file (the `missing` quirk)."""
    if file_quirk == SKIP_MISSING:
        return None
    if file_quirk == FIX_FORMAT_MISMATCH:
        return _encode(image, "PNG")
    if file_quirk == FIX_PALETTE:
        return _encode(image.convert("P", palette=Image.Palette.ADAPTIVE, colors=64), "PNG")
    if file_quirk == FIX_GRAYSCALE:
        image = image.convert("L")
    elif file_quirk == FIX_CMYK:
        image = image.convert("CMYK")
    data = _encode(image, "JPEG", quality=quality)
    if file_quirk == SKIP_TRUNCATED:
        return data[: int(len(data) * TRUNCATE_FRACTION)]
    if file_quirk == SKIP_UNDECODABLE:
        return GARBAGE_PREFIX + rng.bytes(len(data) // 4)
    return data


def _encode(image: Image.Image, image_format: str, **params: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **params)
    return buffer.getvalue()


def _write_atomic(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


# ---------------------------------------------------------------------------------------------
# The whole dataset: plan, render (in order, possibly in parallel), stream the JSON files.


def generate_vg(
    out_dir: Path,
    options: SynthOptions,
    progress: Callable[[int], None] | None = None,
) -> SynthReport:
    """Write a synthetic Visual Genome into `out_dir`; `progress(n)` is told of each n new images.

    An interrupted run leaves no half-written file and no report, so it is not taken for finished.
    """
    out_dir = Path(out_dir)
    check_output_dir(out_dir)
    for folder in IMAGE_FOLDERS:
        (out_dir / folder).mkdir(parents=True, exist_ok=True)
    (out_dir / REPORT_FILE).unlink(missing_ok=True)

    image_ids = _image_ids(options)
    plan = _quirk_plan(options, image_ids)
    tasks = [
        _ImageTask(out_dir, options, image_id, _file_quirk(plan.get(image_id)))
        for image_id in image_ids
    ]
    report = SynthReport(options=options)
    counts: Counter[str] = Counter()
    coco_images: list[dict] = []
    coco_annotations: list[dict] = []
    with _AnnotationWriter(out_dir, options.version) as writer:
        for rendered in _render_all(tasks, options.workers):
            if rendered.coco is not None and plan.get(rendered.image_id) not in IMAGE_SKIPS:
                coco_images.append(rendered.coco["image"])
                for record in rendered.coco["annotations"]:
                    coco_annotations.append(dict(id=len(coco_annotations) + 1, image_id=rendered.coco["image"]["id"], category_id=1, **record))
            quirk = plan.get(rendered.image_id)
            regions, region_counts = _inject_region_quirk(rendered, quirk, writer)
            image_counts = _image_quirk_counts(quirk)
            # VG's wrong sizes are often those of a larger original; twice the size mimics that.
            stated_scale = 2 if quirk == FIX_SIZE_MISMATCH else 1
            writer.add_image(rendered, regions, stated_scale)
            counts += image_counts + region_counts
            report.images_written += 1
            report.regions_written += len(regions)
            if not any(reason in IMAGE_SKIPS for reason in image_counts):
                report.expected_images_kept += 1
                drops = sum(region_counts[reason] for reason in REGION_DROPS)
                report.expected_regions_kept += len(regions) - drops
            if progress is not None:
                progress(1)
        if options.quirks:
            orphan_regions = writer.add_orphan_regions(max(image_ids))
            counts[DROP_NO_IMAGE_RECORD] += orphan_regions
            report.regions_written += orphan_regions
            report.big_region_ids = list(BIG_REGION_IDS)

    from fcdata.synth_coco import INSTANCES_FILE

    instances = {"images": coco_images, "annotations": coco_annotations, "categories": [{"id": 1, "name": "shape"}]}
    _write_atomic(out_dir / INSTANCES_FILE, json.dumps(instances).encode())
    report.coco_images = len(coco_images)
    order = IMAGE_SKIPS + IMAGE_FIXES + REGION_DROPS + REGION_FIXES
    report.quirks = {reason: counts[reason] for reason in order if counts[reason]}
    _write_atomic(out_dir / REPORT_FILE, report.to_json().encode())
    return report


def _image_ids(options: SynthOptions) -> list[int]:
    ordinary = options.num_images - 1 if options.quirks else options.num_images
    ids = list(
        itertools.islice(
            (i for i in itertools.count(1) if i not in KNOWN_CORRUPT_IMAGE_IDS), ordinary
        )
    )
    return ids + [KNOWN_CORRUPT_QUIRK_ID] if options.quirks else ids


def _quirk_plan(options: SynthOptions, image_ids: list[int]) -> dict[int, str]:
    """image id -> its one quirk; each quirk on a different image, chosen by the seed."""
    if not options.quirks:
        return {}
    kinds = FILE_QUIRKS + RECORD_QUIRKS + REGION_QUIRKS
    rng = np.random.default_rng([options.seed, _PLAN_STREAM])
    candidates = [i for i in image_ids if i != KNOWN_CORRUPT_QUIRK_ID]
    chosen = rng.choice(candidates, size=len(kinds), replace=False)
    plan = {int(image_id): kind for image_id, kind in zip(chosen, kinds)}
    plan[KNOWN_CORRUPT_QUIRK_ID] = SKIP_KNOWN_CORRUPT
    return plan


def _file_quirk(quirk: str | None) -> str | None:
    return quirk if quirk in FILE_QUIRKS else None


def _image_quirk_counts(quirk: str | None) -> Counter[str]:
    if quirk == FIX_PALETTE:  # a palette PNG named .jpg is also a format mismatch
        return Counter({FIX_PALETTE: 1, FIX_FORMAT_MISMATCH: 1})
    if quirk in IMAGE_SKIPS or quirk in IMAGE_FIXES:
        return Counter({quirk: 1})
    return Counter()


def _render_all(tasks: list[_ImageTask], workers: int) -> Iterator[RenderedImage]:
    """Render in task order, in this process or in spawned ones (safe under threads and CUDA).

    An executor rather than multiprocessing.Pool: a worker that dies raises BrokenProcessPool
    here, where a Pool would start replacements forever and hang.
    """
    cores = len(os.sched_getaffinity(0))
    workers = min(workers or cores, cores, len(tasks))  # rendering is CPU-bound: no more than the cores
    if workers <= 1:
        yield from map(_render_task, tasks)
        return
    chunk = max(1, min(16, len(tasks) // (4 * workers)))
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=init_worker, initargs=(os.getpid(),)) as executor:
        with sigint_ignored():  # map submits every task, and so starts every process, here
            rendered = executor.map(_render_task, tasks, chunksize=chunk)
        yield from rendered


def _inject_region_quirk(
    rendered: RenderedImage, quirk: str | None, writer: _AnnotationWriter
) -> tuple[list[dict], Counter[str]]:
    """The image's region records in neutral field names, with its region quirk, if any, applied.

    Drop quirks append a defective region, so the clean ones all survive; fix quirks alter an
    object region, which the sharder keeps after repairing.
    """
    if quirk == SKIP_NO_REGIONS:
        return [], Counter()
    regions = [writer.new_region(r.phrase, r.box) for r in rendered.regions]
    if quirk not in REGION_QUIRKS:
        return regions, Counter()
    width, height = rendered.width, rendered.height
    first = rendered.objects[0]
    fx, fy, fw, fh = first.box
    if quirk == FIX_WHITESPACE:
        regions[0]["phrase"] = f"  {regions[0]['phrase']} "
        regions[1]["phrase"] = regions[1]["phrase"].replace(" ", "\t", 1)
        regions[2]["phrase"] = "\n".join(regions[2]["phrase"].rsplit(" ", 1))
        return regions, Counter({FIX_WHITESPACE: 3})
    if quirk == DROP_EMPTY_PHRASE:
        regions.append(writer.new_region(" \t \n ", first.box))
    elif quirk == DROP_EMPTY_BOX:
        regions.append(writer.new_region("a thin crack in the ground", (fx, fy, 0, fh)))
        shadow = f"a shadow under the {first.label}"
        regions.append(writer.new_region(shadow, (fx, fy + fh, fw, -12)))
    elif quirk == DROP_OUTSIDE_IMAGE:
        beyond = (width + 15, height // 4, 40, 30)
        regions.append(writer.new_region("a sign beyond the right edge", beyond))
    elif quirk == FIX_CLIPPED:
        index = min(range(len(rendered.objects)), key=lambda i: rendered.objects[i].box[0])
        x, y, w, h = rendered.objects[index].box
        overhang = 3 + rendered.image_id % 10  # px left of the image: 3-12, as in VG's few cases
        regions[index].update(x=-overhang, width=x + w + overhang)
        return regions, Counter({FIX_CLIPPED: 1})
    elif quirk == DROP_TOO_SMALL:
        speck = (fx + fw // 2, fy + fh // 2, 2, 2)
        regions.append(writer.new_region("a tiny speck of dust", speck))
    elif quirk == DROP_DUPLICATE:
        areas = [obj.box[2] * obj.box[3] for obj in rendered.objects]
        index = areas.index(max(areas))
        x, y, w, h = rendered.objects[index].box
        shifted = (x + _nudge(x, w, width), y + _nudge(y, h, height), w, h)
        regions.append(writer.new_region(regions[index]["phrase"].title(), shifted))
    elif quirk == DROP_BAD_RECORD:
        missing_phrase = writer.new_region("", first.box)
        del missing_phrase["phrase"]
        not_a_number = writer.new_region("a blurry corner of the picture", first.box)
        not_a_number["x"] = "abc"
        regions += [missing_phrase, not_a_number]
        return regions, Counter({DROP_BAD_RECORD: 2})
    elif quirk == FIX_LONG_PHRASE:
        regions[0]["phrase"] = _long_phrase(regions[0]["phrase"])
        return regions, Counter({FIX_LONG_PHRASE: 1})
    elif quirk == BIG_REGION_IDS_QUIRK:
        for region, big_id in zip(regions, BIG_REGION_IDS):
            region["region_id"] = big_id
        return regions, Counter()
    return regions, Counter({quirk: len(regions) - len(rendered.regions)})


def _nudge(start: int, side: int, limit: int) -> int:
    """A shift of 0-2 px along one axis that keeps IoU above 0.75 (worst: 1 px on 16 px, 0.78
    over both axes) and the box inside [0, limit)."""
    step = 2 if side >= 40 else 1 if side >= 16 else 0
    return step if start + side + step <= limit else -step


def _long_phrase(start: str) -> str:
    """`start` followed by clauses until about 400 characters (the sharder cuts at 200)."""
    clauses = itertools.cycle(LONG_PHRASE_CLAUSES)
    phrase = f"{start} {next(clauses)}"
    while len(phrase) < 400:
        phrase += f" and {next(clauses)}"
    return phrase


class _AnnotationWriter:
    """Streams the four annotation files as top-level JSON lists, renamed into place on success.

    Records are built in a fixed key order and dumped one by one, so memory stays flat however many
    images there are, and the bytes depend only on the records.
    """

    def __init__(self, out_dir: Path, version: str):
        self.version = version
        self.paths = [out_dir / name for name in ANNOTATION_FILES]
        self.next_region_id = 1
        self.next_object_id = 1
        self.next_relationship_id = 1

    def __enter__(self) -> _AnnotationWriter:
        self.files = [
            path.with_name(path.name + ".tmp").open("w", encoding="utf-8") for path in self.paths
        ]
        self.started = [False] * len(self.files)
        for file in self.files:
            file.write("[")
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        for file, path in zip(self.files, self.paths):
            if exc_type is None:
                file.write("]")
            file.close()
            temporary = Path(file.name)
            if exc_type is None:
                os.replace(temporary, path)
            else:
                temporary.unlink(missing_ok=True)

    def _append(self, which: int, record: dict) -> None:
        if self.started[which]:
            self.files[which].write(", ")
        self.started[which] = True
        self.files[which].write(json.dumps(record))

    def new_region(self, phrase: str, box: Box) -> dict:
        """A region in neutral field names with the next region id."""
        region_id, self.next_region_id = self.next_region_id, self.next_region_id + 1
        x, y, w, h = box
        return {"region_id": region_id, "phrase": phrase, "x": x, "y": y, "width": w, "height": h}

    def add_image(self, rendered: RenderedImage, regions: list[dict], stated_scale: int) -> None:
        v10 = self.version == "1.0"
        image_id = rendered.image_id
        self._append(0, {
            "id" if v10 else "image_id": image_id,
            "image_url" if v10 else "url": f"{OLD_URL_PREFIX}{image_id}.jpg",
            "width": rendered.width * stated_scale,
            "height": rendered.height * stated_scale,
            "coco_id": rendered.coco_id,
            "flickr_id": rendered.flickr_id,
        })
        self._add_regions(image_id, regions)
        objects = [
            self._object_record(obj, self.next_object_id + i)
            for i, obj in enumerate(rendered.objects)
        ]
        self.next_object_id += len(objects)
        record_key = "id" if v10 else "image_id"
        self._append(2, {record_key: image_id, "objects": objects})
        relationships = []
        for relation in rendered.relations:
            subject, obj = relation.subject, relation.object
            relationships.append({
                "id" if v10 else "relationship_id": self.next_relationship_id,
                "predicate": relation.predicate,
                "synsets": [],
                "subject": _with_name(objects[subject], rendered.objects[subject]),
                "object": _with_name(objects[obj], rendered.objects[obj]),
            })
            self.next_relationship_id += 1
        self._append(3, {record_key: image_id, "relationships": relationships})

    def add_orphan_regions(self, largest_image_id: int) -> int:
        """A regions record for an image id that image_data.json does not list; returns its size."""
        orphan_id = next(
            i for i in itertools.count(largest_image_id + 1) if i not in KNOWN_CORRUPT_IMAGE_IDS
        )
        regions = [
            self.new_region(f"a {colour} circle", (50 * i, 10, 40, 40))
            for i, colour in enumerate(list(COLOURS)[:ORPHAN_REGIONS])
        ]
        self._add_regions(orphan_id, regions)
        return len(regions)

    def _add_regions(self, image_id: int, regions: list[dict]) -> None:
        id_key, image_key = ("id", "image") if self.version == "1.0" else ("region_id", "image_id")
        records = []
        for region in regions:
            record = {id_key: region["region_id"], image_key: image_id}
            # A key may be missing on purpose: the bad_record quirk drops `phrase`.
            record.update((k, region[k]) for k in REGION_FIELDS if k in region)
            records.append(record)
        self._append(1, {"id": image_id, "regions": records})

    def _object_record(self, obj: SceneObject, object_id: int) -> dict:
        x, y, w, h = obj.box
        synset = SHAPES[obj.shape]
        if self.version == "1.0":
            return {"id": object_id, "x": x, "y": y, "w": w, "h": h, "name": obj.shape}
        if self.version == "1.2":
            return {
                "object_id": object_id, "x": x, "y": y, "w": w, "h": h,
                "name": obj.shape, "synsets": [synset] if synset else [],
            }
        record = {"object_id": object_id, "x": x, "y": y, "w": w, "h": h, "names": [obj.shape]}
        if synset:
            record["synsets"] = [synset]
        return record


def _with_name(object_record: dict, obj: SceneObject) -> dict:
    """A relationship's subject or object: the object's fields, and `name` as VG writes there."""
    return object_record if "name" in object_record else {**object_record, "name": obj.shape}
