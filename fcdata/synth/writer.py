"""The synthetic Visual Genome's files: images rendered in order (in worker processes), the four
annotation files streamed as JSON, coco_instances.json and synth_report.json last.

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
    subject / object     the version's object fields, `name` the object's colour and shape ("red
                         circle"; its objects.json name is the shape alone), so each image's
                         relation phrases name their objects uniquely: "red circle left of blue square"

Region description records are {"id": image_id, "regions": [...]} in every release, as in VG.
URLs point at the old "https://cs.stanford.edu/people/rak248/VG_100K/{id}.jpg" for every image,
including those stored in VG_100K_2/: consumers must look in the folders, not parse the URL.

Image ids are 1, 2, 3, ... skipping `KNOWN_CORRUPT_IMAGE_IDS`, so a clean dataset loses nothing
to the sharder's known-corrupt list. With `quirks` the last image listed gets id 1592 instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
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
from fcdata.outputs import check_output_dir, open_atomically, write_bytes_atomically, write_text_atomically
from fcdata.reasons import (
    DROP_NO_IMAGE_RECORD,
    FIX_SIZE_MISMATCH,
    IMAGE_FIXES,
    IMAGE_SKIPS,
    KNOWN_CORRUPT_IMAGE_IDS,
    REGION_DROPS,
    REGION_FIXES,
)
from fcdata.synth.phrases import _scene_regions, _scene_relations
from fcdata.synth.quirks import (
    BIG_REGION_IDS,
    KNOWN_CORRUPT_QUIRK_ID,
    ORPHAN_REGIONS,
    _file_bytes,
    _file_quirk,
    _image_quirk_counts,
    _inject_region_quirk,
    _quirk_plan,
)
from fcdata.synth.scenes import (
    _COCO_STREAM,
    _IMAGE_STREAM,
    COLOURS,
    SHAPES,
    Box,
    RenderedImage,
    SceneObject,
    _image_size,
    _render_scene,
)
from fcdata.workers import init_worker, sigint_ignored


IMAGE_FOLDERS = ("VG_100K", "VG_100K_2")
ANNOTATION_FILES = (
    "image_data.json", "region_descriptions.json", "objects.json", "relationships.json",
)
REPORT_FILE = "synth_report.json"
OLD_URL_PREFIX = "https://cs.stanford.edu/people/rak248/VG_100K/"
JPEG_QUALITY = (85, 92)  # inclusive range, drawn per image
REGION_FIELDS = ("phrase", "x", "y", "width", "height")  # after the id keys, in VG's order
COCO_ID_BASE = 100_000  # coco_id = base + image id: unique, as VG's are


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


@dataclass(frozen=True)
class _ImageTask:
    out_dir: Path
    options: SynthOptions
    image_id: int
    file_quirk: str | None  # one of FILE_QUIRKS, or None for a normal JPEG


def image_path(out_dir: Path, image_id: int) -> Path:
    """Where image `image_id` is stored: odd ids in VG_100K/, even ids in VG_100K_2/."""
    return out_dir / IMAGE_FOLDERS[1 - image_id % 2] / f"{image_id}.jpg"


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
        write_bytes_atomically(path, data)
    return rendered


def _coco_record(task: _ImageTask, coco_id: int, width: int, height: int, object_masks: list[np.ndarray]) -> dict:
    from fcdata import synth_coco

    rng = np.random.default_rng([task.options.seed, _COCO_STREAM, task.image_id])
    coco_width, coco_height, scale = synth_coco.coco_size(rng, width, height)
    return {
        "image": {"id": coco_id, "width": coco_width, "height": coco_height, "file_name": f"{coco_id:012d}.jpg"},
        "annotations": synth_coco.instance_records(rng, object_masks, coco_width, coco_height, scale),
    }


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
    write_text_atomically(out_dir / INSTANCES_FILE, json.dumps(instances))
    report.coco_images = len(coco_images)
    order = IMAGE_SKIPS + IMAGE_FIXES + REGION_DROPS + REGION_FIXES
    report.quirks = {reason: counts[reason] for reason in order if counts[reason]}
    write_text_atomically(out_dir / REPORT_FILE, report.to_json())
    return report


def _image_ids(options: SynthOptions) -> list[int]:
    ordinary = options.num_images - 1 if options.quirks else options.num_images
    ids = list(
        itertools.islice(
            (i for i in itertools.count(1) if i not in KNOWN_CORRUPT_IMAGE_IDS), ordinary
        )
    )
    return ids + [KNOWN_CORRUPT_QUIRK_ID] if options.quirks else ids


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
        self.stack = contextlib.ExitStack()
        self.files = [open_atomically(self.stack, path) for path in self.paths]
        self.started = [False] * len(self.files)
        for file in self.files:
            file.write("[")
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            for file in self.files:
                file.write("]")
        self.stack.__exit__(exc_type, exc, traceback)

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
    """A relationship's subject or object: the object's fields, and `name` its label. Two objects of
    an image never share both colour and shape, but may share a shape, so the shape alone would leave "circle left of
    square" ambiguous where there are two circles, and a small model tells colours apart long
    before shapes of a few pixels (as CLIP knows the "man" and "horse" of VG's relations)."""
    return {**object_record, "name": obj.label}
