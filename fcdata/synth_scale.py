"""Visual Genome's annotation files at full size, fast: for measuring the annotation phase.

`fcdata.synth` draws scenes whose phrases only one object fits, which costs milliseconds per
image; at VG's 108,077 images that is an hour. This generator writes the same four files
(image_data.json, region_descriptions.json, objects.json, relationships.json; VG 1.4 field names
and key order) at VG's size in about a minute of one core, with the shape of the real thing that a
parser feels: ~50 regions, ~35 objects and ~21 relationships per image (VG 1.4: 2.3M
relationships), phrases of 2-9 words (~700 MB of regions, ~520 MB of objects and ~750 MB of
relationships at full size), ids beyond 2**32 on some regions and relationships, and the JSON a
scanner must not trip on (escaped quotes, brackets and commas inside strings, backslashes,
non-ASCII, tabs and newlines).

A relationship pairs two objects of its image (their ids and boxes, as in VG), names them by
`name` or by `names` (both spellings occur in VG 1.4), and carries a predicate in VG's mixed case
("ON", "on", "sitting on"). A few are planted for the sharder to drop, counted in the report:
a subject with a zero width (`empty_box`), an object moved outside the image (`outside_image`),
and a repeat of the image's previous relationship with its boxes shifted by a pixel
(`duplicate`; only where both boxes are large enough that the shift keeps both IoUs high).
Relationships draw from a random stream of their own, so the other files are the same with or
without them.
Only the first `image_files` images get a JPEG (a cheap gradient at the stated size), so the
image phase can be run on a subset; the rest are missing, as a partial download would be.

Same options, byte-identical files. Every file is written under a temporary name and renamed;
scale_report.json comes last and marks a finished dataset.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from fcdata import reasons
from fcdata.errors import UserError
from fcdata.outputs import atomic_output, open_atomically, write_json_atomically

VG_IMAGES = 108_077  # images in VG 1.2 / 1.4
REPORT_FILE = "scale_report.json"
# VG 1.4's relationships.json: ~2.3M relationships (2,316,104 by the count used here), ~21.4 per image.
VG_RELATIONSHIPS_PER_IMAGE = 2_316_104 / VG_IMAGES
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
# VG's predicates as annotators typed them: mixed case, and a few with stray spaces.
_PREDICATES = (
    "ON", "on", "has", "wearing", "of", "in", "near", "behind", "with", "holding", "above",
    "sitting on", "on top of", "in front of", "standing on", "riding", "under", "next to", "wears",
    "Has", "WEARING", " on ", "parked on", "attached to", "hanging on",
)
# Planted relationship quirks (fractions of relationships) and what the sharder calls them.
_EMPTY_BOX_RATE = 0.002  # the subject's width is 0
_OUTSIDE_RATE = 0.002  # the object is moved past the image's right edge
_DUPLICATE_RATE = 0.01  # the previous relationship again, boxes shifted by one pixel
_DUPLICATE_MIN_SIDE = 32  # px: a one-pixel shift keeps the IoU above 0.9 in source pixels
_PLANTED = (reasons.DROP_EMPTY_BOX, reasons.DROP_OUTSIDE_IMAGE, reasons.DROP_DUPLICATE)


@dataclass(frozen=True)
class ScaleOptions:
    num_images: int = VG_IMAGES  # images listed in image_data.json
    regions_per_image: float = 50.0  # mean; VG 1.2 has 5.41M regions over 108,077 images
    objects_per_image: float = 35.0  # mean; VG 1.4 has 3.80M objects
    relationships_per_image: float = VG_RELATIONSHIPS_PER_IMAGE  # mean; 0 = no relationships.json
    image_files: int = 0  # the first this many images get a JPEG on disk
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_images < 1:
            raise UserError(f"the number of images must be at least 1, got {self.num_images}")
        if not 0 <= self.image_files <= self.num_images:
            raise UserError(f"image_files must be in 0..{self.num_images}, got {self.image_files}")
        if self.regions_per_image <= 0 or self.objects_per_image < 0 or self.relationships_per_image < 0:
            raise UserError("regions_per_image must be > 0, objects_per_image and relationships_per_image >= 0")


def generate_vg_scale(
    out_dir: Path, options: ScaleOptions, progress: Callable[[int], None] | None = None
) -> dict:
    """Write the files (see the module docstring); `progress(images)` after each chunk. Returns
    the report (counts and bytes), also written to scale_report.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / REPORT_FILE).unlink(missing_ok=True)
    rng = np.random.default_rng(options.seed)
    relation_rng = np.random.default_rng([options.seed, 1])  # its own stream: see the module docstring
    phrases = _phrase_pool(rng)
    names = [f"{noun}" for noun in _NOUNS] + [f"{a} {n}" for a in _ADJECTIVES[:6] for n in _NOUNS[:8]]
    stems = ["image_data", "region_descriptions", "objects"]
    if options.relationships_per_image > 0:
        stems.append("relationships")
    else:
        (out_dir / "relationships.json").unlink(missing_ok=True)  # a stale one would be read as ours
    files = {name: out_dir / f"{name}.json" for name in stems}
    counts = {"images": 0, "regions": 0, "objects": 0}
    planted: Counter[str] = Counter()
    if "relationships" in files:
        counts["relationships"] = 0
    image_sizes: list[tuple[int, int]] = []  # of the images that get a file
    next_region, next_object, next_relation = 1, 1, 1
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
            if "relationships" in streams:
                draws = _Relationships(relation_rng, chunk, options.relationships_per_image)
                records = draws.records(names, next_object, next_relation, planted)
                streams["relationships"].write(separator + ", ".join(records))
                next_relation += draws.count
                counts["relationships"] += draws.count
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
    if "relationships" in files:
        report["planted_relationship_drops"] = {reason: planted[reason] for reason in _PLANTED}
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


class _Relationships:
    """The relationships of a chunk's images, drawn at once: pairs of distinct objects of one image
    (images with fewer than two objects get none), a predicate, a name spelling and a quirk each."""

    def __init__(self, rng: np.random.Generator, chunk: "_Chunk", per_image: float):
        object_counts = chunk.object_counts
        self.per_image = np.where(object_counts >= 2, rng.poisson(per_image, len(object_counts)), 0)
        self.count = int(self.per_image.sum())
        image = np.repeat(np.arange(len(object_counts)), self.per_image)
        first_object = np.concatenate(([0], np.cumsum(object_counts)[:-1]))[image]
        available = object_counts[image]
        subject = rng.integers(0, 2**31, self.count) % available
        other = (subject + 1 + rng.integers(0, 2**31, self.count) % np.maximum(available - 1, 1)) % available
        self.chunk = chunk
        self.subject_row = (first_object + subject).tolist()  # rows of the chunk's objects
        self.object_row = (first_object + other).tolist()
        self.predicate = rng.integers(0, len(_PREDICATES), self.count).tolist()
        self.spelling = (rng.random((self.count, 2)) < 0.7).tolist()  # True: "name", else "names"
        self.quirk = rng.random(self.count).tolist()
        self.big_ids = (rng.random(self.count) < 0.001).tolist()
        self.tricky = (rng.random(self.count) < 1 / _TRICKY_EVERY).tolist()

    def records(self, names: list[str], first_object_id: int, first_id: int, planted: Counter) -> list[str]:
        """One JSON record per image of the chunk; `planted` counts the quirks by drop reason."""
        chunk, records, row = self.chunk, [], 0
        for index, (image_id, count) in enumerate(zip(chunk.image_ids, self.per_image.tolist())):
            width, height = chunk.widths[index], chunk.heights[index]
            items, previous, previous_tricky = [], None, False
            for _ in range(count):
                subject, obj = self.subject_row[row], self.object_row[row]
                ends = [list(chunk.object_boxes[subject]), list(chunk.object_boxes[obj])]
                predicate = _PREDICATES[self.predicate[row]]
                quirk, tricky = self.quirk[row], self.tricky[row]
                if quirk < _DUPLICATE_RATE and previous is not None:
                    subject, obj, predicate, ends = previous
                    ends = [[x + 1, y, w, h] for x, y, w, h in ends]
                    planted[reasons.DROP_DUPLICATE] += 1
                    tricky = previous_tricky
                    previous = None  # no chains: each repeat's original is a clean relationship
                elif quirk > 1 - _EMPTY_BOX_RATE:
                    ends[0][2] = 0
                    planted[reasons.DROP_EMPTY_BOX] += 1
                    previous = None
                elif quirk > 1 - _EMPTY_BOX_RATE - _OUTSIDE_RATE:
                    ends[1][0] = width + 10
                    planted[reasons.DROP_OUTSIDE_IMAGE] += 1
                    previous = None
                else:
                    large = min(ends[0][2], ends[0][3], ends[1][2], ends[1][3]) >= _DUPLICATE_MIN_SIDE
                    previous = (subject, obj, predicate, ends) if large else None
                    previous_tricky = tricky
                relation_id = first_id + row + (1 << 32 if self.big_ids[row] else 0)
                subject_name, object_name = names[chunk.name_index[subject]], names[chunk.name_index[obj]]
                # The tricky text goes on the subject's name only; its synset keeps the plain noun.
                suffix = f" {_TRICKY[subject % len(_TRICKY)]}" if tricky else ""
                spelling = self.spelling[row]
                items.append(
                    f'{{"predicate": {json.dumps(predicate)}, '
                    f'"object": {self._end(object_name, "", first_object_id + obj, ends[1], spelling[1])}, '
                    f'"relationship_id": {relation_id}, "synsets": ["{predicate.split()[-1].lower()}.r.01"], '
                    f'"subject": {self._end(subject_name, suffix, first_object_id + subject, ends[0], spelling[0])}}}'
                )
                row += 1
            records.append(f'{{"relationships": [{", ".join(items)}], "image_id": {image_id}}}')
        return records

    @staticmethod
    def _end(name: str, suffix: str, object_id: int, box: list[int], single: bool) -> str:
        """A subject or object as VG 1.4 writes it, named by `name` or by a one-entry `names`."""
        x, y, w, h = box
        text = json.dumps(name + suffix, ensure_ascii=object_id % 2 == 0)
        named = f'"name": {text}' if single else f'"names": [{text}]'
        return (
            f'{{{named}, "h": {h}, "object_id": {object_id}, "synsets": ["{name.split(" ")[-1]}.n.01"], '
            f'"w": {w}, "y": {y}, "x": {x}}}'
        )


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
