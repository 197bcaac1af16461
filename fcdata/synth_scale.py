"""Visual Genome's annotation files at full size, fast: for measuring the annotation phase.

`fcdata.synth` draws scenes whose phrases only one object fits, which costs milliseconds per
image; at VG's 108,077 images that is an hour. This generator writes the same three files
(image_data.json, region_descriptions.json, objects.json, VG 1.4 field names and key order) at
VG's size in about two minutes of one core, with the shape of the real thing that a parser feels:
~50 regions and ~35 objects per image, phrases of 2-9 words (~700 MB of regions and ~520 MB of
objects at full size), ids beyond 2**32 on some regions, and the JSON a scanner must not trip on
(escaped quotes, brackets and commas inside strings, backslashes, non-ASCII, tabs and newlines).
Only the first `image_files` images get a JPEG (a cheap gradient at the stated size), so the
image phase can be run on a subset; the rest are missing, as a partial download would be.

Same options, byte-identical files. Every file is written under a temporary name and renamed;
scale_report.json comes last and marks a finished dataset.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from fcdata.errors import UserError
from fcdata.outputs import atomic_output, open_atomically, write_json_atomically

VG_IMAGES = 108_077  # images in VG 1.2 / 1.4
REPORT_FILE = "scale_report.json"
_URL = "https://cs.stanford.edu/people/rak248/VG_100K_2/"
_CHUNK_IMAGES = 2000  # images formatted per write: large enough to amortise, small enough for memory
_ADJECTIVES = (
    "white", "black", "red", "green", "blue", "brown", "small", "large", "tall", "wooden", "metal",
    "striped", "open", "dark", "bright", "old", "empty", "round", "silver", "yellow",
)
_NOUNS = (
    "man", "woman", "tree", "window", "building", "shirt", "car", "sign", "wall", "table", "plate",
    "street", "sky", "cloud", "grass", "door", "hand", "head", "chair", "light", "bus", "dog",
    "train", "water", "pole", "fence", "boat", "leaf", "jacket", "umbrella", "giraffe", "clock",
)
_RELATIONS = ("on", "behind", "next to", "near", "in front of", "under", "holding", "wearing", "has", "of")
# Strings a record scan must skip over as strings: quotes, brackets, commas, backslashes, escapes.
_TRICKY = (
    'sign reads "stop, now"', "the [left] side", "a {curly} brace", "path C:\\photos\\", "café au lait",
    "tab\there", "two\nlines", "  leading and trailing  ", 'quote at the end"', "ends with a backslash\\",
    "naïve façade ünder the 🌧", "]}],[{",
)
_TRICKY_EVERY = 997  # one phrase in this many is a tricky one


@dataclass(frozen=True)
class ScaleOptions:
    num_images: int = VG_IMAGES  # images listed in image_data.json
    regions_per_image: float = 50.0  # mean; VG 1.2 has 5.41M regions over 108,077 images
    objects_per_image: float = 35.0  # mean; VG 1.4 has 3.80M objects
    image_files: int = 0  # the first this many images get a JPEG on disk
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_images < 1:
            raise UserError(f"the number of images must be at least 1, got {self.num_images}")
        if not 0 <= self.image_files <= self.num_images:
            raise UserError(f"image_files must be in 0..{self.num_images}, got {self.image_files}")
        if self.regions_per_image <= 0 or self.objects_per_image < 0:
            raise UserError("regions_per_image must be > 0 and objects_per_image >= 0")


def generate_vg_scale(
    out_dir: Path, options: ScaleOptions, progress: Callable[[int], None] | None = None
) -> dict:
    """Write the files (see the module docstring); `progress(images)` after each chunk. Returns
    the report (counts and bytes), also written to scale_report.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / REPORT_FILE).unlink(missing_ok=True)
    rng = np.random.default_rng(options.seed)
    phrases = _phrase_pool(rng)
    names = [f"{noun}" for noun in _NOUNS] + [f"{a} {n}" for a in _ADJECTIVES[:6] for n in _NOUNS[:8]]
    files = {name: out_dir / f"{name}.json" for name in ("image_data", "region_descriptions", "objects")}
    counts = {"images": 0, "regions": 0, "objects": 0}
    image_sizes: list[tuple[int, int]] = []  # of the images that get a file
    next_region, next_object = 1, 1
    with contextlib.ExitStack() as stack:
        streams = {name: open_atomically(stack, path) for name, path in files.items()}
        for stream in streams.values():
            stream.write("[")
        for first in range(0, options.num_images, _CHUNK_IMAGES):
            image_ids = np.arange(first + 1, min(first + _CHUNK_IMAGES, options.num_images) + 1)
            chunk = _Chunk(rng, image_ids, options, len(phrases), len(names))
            separator = ", " if first else ""
            streams["image_data"].write(separator + ", ".join(chunk.image_records()))
            streams["region_descriptions"].write(separator + ", ".join(chunk.region_records(phrases, next_region)))
            streams["objects"].write(separator + ", ".join(chunk.object_records(names, next_object)))
            image_sizes += list(zip(chunk.widths, chunk.heights))[: options.image_files - len(image_sizes)]
            next_region += chunk.region_count
            next_object += chunk.object_count
            counts["images"] += len(image_ids)
            counts["regions"] += chunk.region_count
            counts["objects"] += chunk.object_count
            if progress:
                progress(len(image_ids))
        for stream in streams.values():
            stream.write("]")
    _write_images(out_dir, image_sizes, rng)
    report = {
        "options": asdict(options),
        "counts": counts,
        "bytes": {name: path.stat().st_size for name, path in files.items()},
    }
    write_json_atomically(out_dir / REPORT_FILE, report)
    return report


def _phrase_pool(rng: np.random.Generator, size: int = 20_000) -> list[str]:
    """JSON-encoded phrases (with their quotes): VG-like word patterns plus the tricky strings."""
    adjectives = rng.integers(0, len(_ADJECTIVES), (size, 2))
    nouns = rng.integers(0, len(_NOUNS), (size, 2))
    relations = rng.integers(0, len(_RELATIONS), size)
    forms = rng.integers(0, 4, size)
    pool = []
    for k in range(size):
        a, b = _ADJECTIVES[adjectives[k, 0]], _ADJECTIVES[adjectives[k, 1]]
        n, m = _NOUNS[nouns[k, 0]], _NOUNS[nouns[k, 1]]
        text = (
            f"{a} {n}",
            f"the {n} is {a}",
            f"{a} {n} {_RELATIONS[relations[k]]} the {m}",
            f"a {a} and {b} {n} {_RELATIONS[relations[k]]} a {m}",
        )[forms[k]]
        if k % _TRICKY_EVERY == 0:
            text = f"{text} {_TRICKY[(k // _TRICKY_EVERY) % len(_TRICKY)]}"
        pool.append(json.dumps(text, ensure_ascii=k % 2 == 0))
    return pool


class _Chunk:
    """The random numbers of a run of images, drawn at once (NumPy), formatted record by record."""

    def __init__(self, rng: np.random.Generator, image_ids: np.ndarray, options: ScaleOptions, phrases: int, names: int):
        count = len(image_ids)
        self.image_ids = image_ids.tolist()
        landscape = rng.random(count) < 0.7
        self.widths = np.where(landscape, 800, rng.integers(450, 600, count)).tolist()
        self.heights = np.where(landscape, rng.integers(450, 600, count), 800).tolist()
        self.region_counts = rng.poisson(options.regions_per_image, count)
        self.object_counts = rng.poisson(options.objects_per_image, count)
        self.region_count = int(self.region_counts.sum())
        self.object_count = int(self.object_counts.sum())
        self.region_boxes = self._boxes(rng, self.region_counts)
        self.object_boxes = self._boxes(rng, self.object_counts)
        self.phrase_index = rng.integers(0, phrases, self.region_count).tolist()
        self.name_index = rng.integers(0, names, self.object_count).tolist()
        self.big_ids = (rng.random(self.region_count) < 0.001).tolist()

    def _boxes(self, rng: np.random.Generator, per_image: np.ndarray) -> list[list[int]]:
        """x, y, w, h per row (ints), inside each image."""
        total = int(per_image.sum())
        width = np.repeat(np.array(self.widths), per_image)
        height = np.repeat(np.array(self.heights), per_image)
        w = np.maximum(1, (rng.beta(1.2, 4.0, total) * width).astype(np.int64))
        h = np.maximum(1, (rng.beta(1.2, 4.0, total) * height).astype(np.int64))
        x = (rng.random(total) * (width - w)).astype(np.int64)
        y = (rng.random(total) * (height - h)).astype(np.int64)
        return np.stack([x, y, w, h], axis=1).tolist()

    def image_records(self) -> list[str]:
        return [
            f'{{"width": {w}, "url": "{_URL}{i}.jpg", "height": {h}, "image_id": {i}, '
            f'"coco_id": null, "flickr_id": null}}'
            for i, w, h in zip(self.image_ids, self.widths, self.heights)
        ]

    def region_records(self, phrases: list[str], first_id: int) -> list[str]:
        records, row = [], 0
        for image_id, count in zip(self.image_ids, self.region_counts.tolist()):
            regions = []
            for _ in range(count):
                x, y, w, h = self.region_boxes[row]
                region_id = first_id + row + (1 << 32 if self.big_ids[row] else 0)
                regions.append(
                    f'{{"region_id": {region_id}, "width": {w}, "height": {h}, "image_id": {image_id}, '
                    f'"phrase": {phrases[self.phrase_index[row]]}, "y": {y}, "x": {x}}}'
                )
                row += 1
            records.append(f'{{"regions": [{", ".join(regions)}], "id": {image_id}}}')
        return records

    def object_records(self, names: list[str], first_id: int) -> list[str]:
        records, row = [], 0
        for image_id, count in zip(self.image_ids, self.object_counts.tolist()):
            objects = []
            for _ in range(count):
                x, y, w, h = self.object_boxes[row]
                name = names[self.name_index[row]]
                objects.append(
                    f'{{"synsets": ["{name.rsplit(" ", 1)[-1]}.n.01"], "h": {h}, "object_id": {first_id + row}, '
                    f'"merged_object_ids": [], "names": ["{name}"], "w": {w}, "y": {y}, "x": {x}}}'
                )
                row += 1
            records.append(f'{{"image_id": {image_id}, "objects": [{", ".join(objects)}], "image_url": "{_URL}{image_id}.jpg"}}')
        return records


def _write_images(out_dir: Path, sizes: list[tuple[int, int]], rng: np.random.Generator) -> None:
    """JPEGs for images 1, 2, ... at the sizes image_data.json states (a tinted ramp plus 8 px
    blocks of noise: cheap to draw, and JPEG has real work to do on it)."""
    from PIL import Image

    if not sizes:
        return
    folder = out_dir / "VG_100K"
    folder.mkdir(exist_ok=True)
    for image_id, (width, height) in enumerate(sizes, start=1):
        tint = rng.integers(0, 256, 3)
        noise = rng.integers(0, 24, (height // 8 + 1, width // 8 + 1, 1), dtype=np.uint8)
        path = folder / f"{image_id}.jpg"
        if path.exists():
            continue
        ramp = np.linspace(0, 127, width, dtype=np.float32)[None, :, None]
        pixels = (ramp + tint[None, None, :] * 0.5).astype(np.uint8)
        image = np.broadcast_to(pixels, (height, width, 3)) + np.repeat(np.repeat(noise, 8, 0), 8, 1)[:height, :width]
        with atomic_output(path) as temporary:
            Image.fromarray(image).save(temporary, "JPEG", quality=90)
