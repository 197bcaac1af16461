"""`fc shard`: Visual Genome -> WebDataset tar shards of (JPEG, region masks, JSON), a Parquet
manifest and a JSON summary.

Output layout (OUT/):
    train-00000.tar ...     samples of the train split, `ShardOptions.shard_samples` images each
    val-00000.tar ...       samples of the val split
    manifest.parquet        one row per listed image: its shard and sizes, or why it was skipped
    summary.json            counts of everything written, skipped, dropped and fixed
    sizes.json              shard file -> number of samples (what open_clip-style loaders expect)
    shard_config.json       the options and inputs this output was made with, and the shard plan
    .parts/                 one Parquet manifest part per finished shard (resume bookkeeping)

Each shard is written under a temporary name, fsynced and renamed; its manifest part is renamed
last, so a shard counts as done exactly when its part exists. Re-running the same command after
an interruption writes only the missing shards; re-running a finished job does nothing. Shard
contents depend only on the input and the options, not on the number of workers.
"""

from __future__ import annotations

import errno
import gc
import json
import logging
import multiprocessing
import os
import signal
import time
from collections import Counter
from contextlib import contextmanager
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fcdata import coco, masks, reasons, regions, relations, segmasks, vg
from fcdata.encode import RegionColumns, SkipImage, encode_sample
from fcdata.errors import CountingHandler, UserError, error_detail
from fcdata.options import ShardOptions
from fcdata.outputs import atomic_output, check_output_dir, write_json_atomically
from fcdata.tarformat import TarShardWriter
from fcdata.workers import init_worker, sigint_ignored

log = logging.getLogger("fc.shard")

SPLITS = ("train", "val")
PARTS_DIR = ".parts"
CONFIG_FILE = "shard_config.json"
FORMAT_VERSION = 1


class ShardProgress(Protocol):
    def note(self, message: str) -> None: ...  # a phase begins (e.g. reading annotations)

    def annotations(self, name: str, scanned_bytes: int, total_bytes: int, decoded: int, records: int) -> None:
        """Reading annotation file `name`: bytes scanned of its size, records decoded of
        `records` (-1 until the scan has counted them). See fcdata.vg.AnnotationProgress."""

    def start(self, images: int, shards: int, shards_done: int) -> None: ...

    def advance(self, images: int, skipped: int, busy_seconds: float) -> None:
        """A worker finished `images` more (of which `skipped` were skipped), having been busy
        `busy_seconds` on them: images / busy seconds is the throughput of one core."""

    def shard_done(self) -> None: ...


@dataclass
class ShardSummary:
    data: dict  # what summary.json holds
    already_complete: bool = False  # nothing was left to do

    def to_json(self) -> str:
        return json.dumps(self.data, indent=2, sort_keys=True)


# ----------------------------------------------------------------------------- planning


def split_hash(image_ids: np.ndarray) -> np.ndarray:
    """splitmix64 of each id: a fixed, well-mixed order and split that no library version changes."""
    z = image_ids.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def plan_shards(image_ids: np.ndarray, options: ShardOptions) -> dict[str, np.ndarray]:
    """shard name -> the image ids it holds, in order. Split and order come from split_hash."""
    hashed = split_hash(image_ids)
    unit = (hashed >> np.uint64(11)).astype(np.float64) * 2.0**-53  # uniform in [0, 1)
    plan: dict[str, np.ndarray] = {}
    for split, members in (("val", unit < options.val_fraction), ("train", unit >= options.val_fraction)):
        ids = image_ids[members]
        ids = ids[np.argsort(hashed[members], kind="stable")]
        for index, start in enumerate(range(0, len(ids), options.shard_samples)):
            plan[f"{split}-{index:05d}"] = ids[start : start + options.shard_samples]
    return dict(sorted(plan.items()))


def sample_key(image_id: int) -> str:
    return f"{image_id:09d}"


# ----------------------------------------------------------------------------- shard tasks


@dataclass
class ShardTask:
    """Everything a worker needs for one shard; rows of image i are offsets[i]:offsets[i + 1]."""

    name: str
    out_dir: str
    options: ShardOptions
    image_ids: np.ndarray  # int64 [n]
    paths: list[str | None]  # [n] image file, None = not found on disk
    stated_sizes: np.ndarray  # int32 [n, 2] width, height from image_data.json (0 = not stated)
    region_offsets: np.ndarray  # int64 [n + 1]
    region_ids: np.ndarray  # int64 [R]
    region_xywh: np.ndarray  # float64 [R, 4] source pixels
    phrases: list[str]  # [R], normalised
    phrase_keys: np.ndarray  # int64 [R], -1 = empty
    whitespace_fixed: np.ndarray  # bool [R]
    long_fixed: np.ndarray  # bool [R]
    object_offsets: np.ndarray  # int64 [n + 1]
    object_ids: np.ndarray  # int64 [M]
    object_xywh: np.ndarray  # float64 [M, 4]
    object_names: list[list[str]]  # [M]
    object_synsets: list[list[str]]  # [M]
    region_object: np.ndarray  # int64 [R]: the best-overlapping object's row in this task, or -1
    region_object_iou: np.ndarray  # float32 [R]
    coco_images: list  # [n] coco.CocoImage of each image, None if not a COCO photo (or no --coco-instances)
    relations: relations.RelationRows | None = None  # None: no relationships.json read


class _ByImage:
    """A table's rows grouped by image id (stable, so file order survives within an image), and
    those rows gathered shard by shard.

    Memory is the point (VG's tables are ~1 GB in the parent): the grouping keeps one int32 row
    order and one entry per image rather than a sorted copy of every row's id, and `take` reads
    the rows from the table's chunks as they are. pyarrow's take on a chunked column first joins
    all its chunks, and copying whole columns to NumPy once would hold the tables twice."""

    def __init__(self, table: pa.Table):
        image_ids = table.column("image_id").to_numpy()
        self.order = np.argsort(image_ids, kind="stable").astype(np.int32 if len(image_ids) < 2**31 else np.int64)
        self.unique_ids, self.starts, self.counts = np.unique(image_ids[self.order], return_index=True, return_counts=True)
        self.batches = table.to_batches()  # zero-copy views of the chunks
        self.first_rows = np.cumsum([0] + [batch.num_rows for batch in self.batches])
        self.schema = table.schema

    def rows(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row indices into the table, offsets per id) for the ids, in their order."""
        if len(self.unique_ids):
            found = np.minimum(np.searchsorted(self.unique_ids, ids), len(self.unique_ids) - 1)
            present = self.unique_ids[found] == ids
            starts, counts = np.where(present, self.starts[found], 0), np.where(present, self.counts[found], 0)
        else:
            starts = counts = np.zeros(len(ids), np.int64)
        offsets = np.zeros(len(ids) + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        positions = np.repeat(starts - offsets[:-1], counts) + np.arange(offsets[-1])
        return self.order[positions].astype(np.int64), offsets

    def take(self, rows: np.ndarray) -> pa.Table:
        """The table's rows `rows` (in that order) as a one-chunk table: each chunk gives its rows,
        then one small take restores the order."""
        chunk = np.searchsorted(self.first_rows, rows, side="right") - 1
        by_chunk = np.argsort(chunk, kind="stable")
        bounds = np.searchsorted(chunk[by_chunk], np.arange(len(self.batches) + 1))
        pieces = []
        for index, batch in enumerate(self.batches):
            picked = by_chunk[bounds[index] : bounds[index + 1]]
            if len(picked):
                pieces.append(batch.take(pa.array(rows[picked] - self.first_rows[index])))
        gathered = pa.Table.from_batches(pieces, schema=self.schema)
        inverse = np.empty(len(rows), np.int64)
        inverse[by_chunk] = np.arange(len(rows))
        return gathered.take(pa.array(inverse))


def _build_tasks(
    annotations: vg.VgAnnotations,
    plan: dict[str, np.ndarray],
    names: list[str],
    image_files: dict[int, Path],
    out_dir: Path,
    options: ShardOptions,
    coco_by_image: dict[int, coco.CocoImage],
) -> Iterator[ShardTask]:
    images = annotations.images
    stated_by_id = dict(
        zip(
            images.column("image_id").to_pylist(),
            zip(images.column("stated_width").to_pylist(), images.column("stated_height").to_pylist()),
        )
    )
    region_groups = _ByImage(annotations.regions)  # phrases already normalised (by the workers that decoded them)
    objects = annotations.objects if annotations.objects is not None else vg.OBJECTS_SCHEMA.empty_table()
    object_groups = _ByImage(objects)
    relation_groups = None if annotations.relations is None else _ByImage(annotations.relations)
    for name in names:
        ids = plan[name]
        region_rows, region_offsets = region_groups.rows(ids)
        shard_regions = region_groups.take(region_rows)
        object_rows, object_offsets = object_groups.rows(ids)
        shard_objects = object_groups.take(object_rows)
        region_xywh = _boxes(shard_regions)
        object_xywh = _boxes(shard_objects)
        best_object, best_iou = regions.match_objects(region_xywh, region_offsets, object_xywh, object_offsets)
        shard_relations = None
        if relation_groups is not None:
            relation_rows, relation_offsets = relation_groups.rows(ids)
            shard_relations = relations.RelationRows.of(relation_groups.take(relation_rows), relation_offsets)
        yield ShardTask(
            name=name,
            out_dir=str(out_dir),
            options=options,
            image_ids=ids,
            paths=[str(image_files[i]) if i in image_files else None for i in ids.tolist()],
            stated_sizes=np.array([stated_by_id[i] for i in ids.tolist()], np.int32).reshape(-1, 2),
            region_offsets=region_offsets,
            region_ids=shard_regions.column("region_id").to_numpy(),
            region_xywh=region_xywh,
            phrases=shard_regions.column("phrase").to_pylist(),
            phrase_keys=shard_regions.column("phrase_key").to_numpy(),
            whitespace_fixed=shard_regions.column("whitespace_fixed").to_numpy(),
            long_fixed=shard_regions.column("long_fixed").to_numpy(),
            object_offsets=object_offsets,
            object_ids=shard_objects.column("object_id").to_numpy(),
            object_xywh=object_xywh,
            object_names=shard_objects.column("names").to_pylist(),
            object_synsets=shard_objects.column("synsets").to_pylist(),
            region_object=best_object,
            region_object_iou=best_iou,
            coco_images=[coco_by_image.get(i) for i in ids.tolist()],
            relations=shard_relations,
        )


def _boxes(table: pa.Table) -> np.ndarray:
    """N x 4 float64 (x, y, w, h) of a one-chunk table's rows."""
    return np.stack([table.column(c).to_numpy() for c in "xywh"], axis=1).reshape(-1, 4)


# ----------------------------------------------------------------------------- one shard


MANIFEST_SCHEMA = pa.schema(
    [
        ("split", pa.string()),
        ("shard", pa.string()),  # file name; for a skipped image, the shard it was planned for
        ("key", pa.string()),
        ("image_id", pa.int64()),
        ("status", pa.string()),  # "ok" or a skip reason (fcdata.reasons.IMAGE_SKIPS)
        ("detail", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("source_width", pa.int32()),
        ("source_height", pa.int32()),
        ("regions_listed", pa.int32()),
        ("regions_kept", pa.int32()),
        ("jpg_bytes", pa.int32()),
        ("mask_bytes", pa.int32()),
        ("meta_bytes", pa.int32()),
        ("image_fixes", pa.list_(pa.string())),
    ]
    + [(f"drop_{r}", pa.int32()) for r in reasons.REGION_DROP_CODES[1:]]
    + [(f"fix_{r}", pa.int32()) for r in reasons.REGION_FIXES]
    + [(f"coco_{name}", pa.int32()) for name in coco.COUNTS]  # null without COCO instances
    + [(name, pa.int32()) for name in relations.MANIFEST_COLUMNS]  # null where relations were not read
)


def write_shard(task: ShardTask, report: Callable[[int, int, float], None]) -> None:
    """Write one shard and its manifest part; `report(images, skipped, busy_seconds)` tracks
    progress (see ShardProgress.advance)."""
    from PIL import Image

    pil_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # ShardOptions.max_source_pixels is checked instead
    # The task holds ~10^5 lists and strings for the whole shard, and the cyclic collector kept
    # re-scanning them (up to 4x the cost of building the region columns). Nothing written here
    # forms reference cycles, so reference counting alone frees it all.
    collecting = gc.isenabled()
    gc.disable()
    try:
        _write_shard(task, report)
    finally:
        if collecting:
            gc.enable()
        Image.MAX_IMAGE_PIXELS = pil_limit


def _write_shard(task: ShardTask, report: Callable[[int, int, float], None]) -> None:
    out_dir = Path(task.out_dir)
    split = task.name.split("-")[0]
    shard_file = f"{task.name}.tar"
    handler = CountingHandler(f"shard {task.name}")
    manifest_rows = []
    pending_images = pending_skips = 0
    since = time.perf_counter()
    columns = RegionColumns.of(task)
    with atomic_output(out_dir / shard_file) as temp_tar, TarShardWriter(temp_tar) as writer:
        for index, image_id in enumerate(task.image_ids.tolist()):
            key = sample_key(image_id)
            row = {"split": split, "shard": shard_file, "key": key, "image_id": image_id}
            try:
                members = encode_sample(task, columns, index, row)
                for extension, data in members.items():
                    writer.write(f"{key}.{extension}", data)
                row.update(status="ok", detail="")
            except SkipImage as skip:
                row.update(status=skip.reason, detail=skip.detail)
                pending_skips += 1
            except Exception as exc:  # noqa: BLE001 - one bad image must not end the run
                if task.options.strict or not handler(exc):
                    raise
                row.update(status=reasons.SKIP_ERROR, detail=error_detail(exc))
                pending_skips += 1
            manifest_rows.append(row)
            pending_images += 1
            if pending_images == 16:
                now = time.perf_counter()
                report(pending_images, pending_skips, now - since)
                pending_images = pending_skips = 0
                since = now
    with atomic_output(out_dir / PARTS_DIR / f"{task.name}.parquet") as temp_part:
        pq.write_table(pa.Table.from_pylist(manifest_rows, schema=MANIFEST_SCHEMA), temp_part)
    report(pending_images, pending_skips, time.perf_counter() - since)


# ----------------------------------------------------------------------------- the whole job

_worker_queue = None


def warm_up_kernels() -> None:
    """Load (or compile) every numba kernel the writer uses, so that cost lands before the first
    image instead of inside it."""
    boxes = np.zeros((1, 4), np.float64)
    flags = np.zeros(1, np.bool_)
    stored, codes, clipped = regions.filter_regions(boxes, np.zeros(1, np.int64), 1, 1, 1.0, 1.0, 0.0, 0.5)
    regions.tally_regions(codes, clipped, flags, flags)
    regions.match_objects(boxes, np.zeros(2, np.int64), boxes, np.zeros(2, np.int64))
    relations.filter_relations(boxes, boxes, np.zeros(1, np.int64), 1, 1, 1.0, 1.0, 0.0, 0.5)
    for feather in (0.0, 1.0):
        masks.encode_profiles(*masks.box_profiles(stored.astype(np.float32), 2, 2, feather), binary=feather == 0.0)


def _init_worker(queue, parent: int) -> None:
    global _worker_queue
    init_worker(parent)
    _worker_queue = queue
    warm_up_kernels()


def _write_shard_in_worker(task: ShardTask) -> str:
    write_shard(task, lambda *counts: _worker_queue.put(counts))
    return task.name


class _Workers(NamedTuple):
    pool: ProcessPoolExecutor
    queue: object  # multiprocessing queue of (images, skipped, busy_seconds) from the workers
    count: int


@contextmanager
def _worker_pool(workers: int) -> Iterator[_Workers | None]:
    """The worker processes for the whole job, or None to work in this process.

    Every worker is started at once, so that spawning, imports and kernel warm-up happen while
    this process scans the annotations, not after."""
    if workers == 1:
        yield None
        return
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(queue, os.getpid()))
    with sigint_ignored():
        for _ in range(workers):
            pool.submit(int)  # a no-op that makes the pool start its processes now
    try:
        yield _Workers(pool, queue, workers)
    finally:
        # Waiting lets workers that are still starting exit quietly instead of printing tracebacks.
        pool.shutdown(wait=True, cancel_futures=True)


# A test hook: with FC_SHARD_KILL_AFTER=N in the environment the job SIGKILLs itself as soon as
# N shards are finished, so the kill -9 test always dies part way through, however fast the machine.
KILL_AFTER_ENV = "FC_SHARD_KILL_AFTER"


def _crash_hook() -> Callable[[], None]:
    """What to call after each finished shard: nothing unless KILL_AFTER_ENV is set."""
    value = os.environ.get(KILL_AFTER_ENV, "")
    if not value:
        return lambda: None
    if not value.isdigit() or int(value) < 1:
        raise UserError(f"{KILL_AFTER_ENV} must be a number of shards >= 1, got {value!r}")
    finished = 0

    def shard_finished() -> None:
        nonlocal finished
        finished += 1
        if finished == int(value):
            os.kill(os.getpid(), signal.SIGKILL)

    return shard_finished


def _run_tasks(tasks: Iterator[ShardTask], workers: _Workers | None, progress: ShardProgress | None) -> None:
    advance = progress.advance if progress else (lambda images, skipped, busy_seconds: None)
    shard_finished = _crash_hook()
    if workers is None:
        warm_up_kernels()
        for task in tasks:
            write_shard(task, advance)
            if progress:
                progress.shard_done()
            shard_finished()
        return
    pool, queue = workers.pool, workers.queue
    pending: set[Future] = set()

    def submit_next() -> None:
        task = next(tasks, None)
        if task is not None:
            pending.add(pool.submit(_write_shard_in_worker, task))

    # Two tasks per worker keep every worker busy; more would hold more annotations in memory.
    for _ in range(2 * workers.count):
        submit_next()
    while pending:
        done, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
        _drain(queue, advance)
        for future in done:
            pending.discard(future)
            future.result()
            if progress:
                progress.shard_done()
            shard_finished()
            submit_next()
    _drain(queue, advance)


def _drain(queue, advance: Callable[[int, int, float], None]) -> None:
    import queue as queue_module

    while True:
        try:
            counts = queue.get_nowait()
        except queue_module.Empty:
            return
        advance(*counts)


def _check_or_write_config(out_dir: Path, config: dict) -> None:
    path = out_dir / CONFIG_FILE
    if path.exists():
        existing = json.loads(path.read_text())
        for section in ("format", "options", "inputs"):
            if existing.get(section) != config[section]:
                changed = _first_difference(existing.get(section), config[section])
                raise UserError(
                    f"{out_dir} holds a shard job made with other {section} ({changed}); "
                    "use a new --out, or delete it to start over"
                )
        return
    write_json_atomically(path, config, sort_keys=True)


def _first_difference(old, new) -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for name in sorted(set(old) | set(new)):
            if old.get(name) != new.get(name):
                return f"{name}: {old.get(name)!r} -> {new.get(name)!r}"
    return f"{old!r} -> {new!r}"


def _remove_temporaries(out_dir: Path) -> None:
    for folder in (out_dir, out_dir / PARTS_DIR):
        for leftover in folder.glob("*.tmp*"):
            leftover.unlink()


def _finished_summary(out_dir: Path, config: dict) -> ShardSummary | None:
    """The saved summary if this exact job already finished and its files are all present."""
    config_path, summary_path = out_dir / CONFIG_FILE, out_dir / "summary.json"
    if not (config_path.exists() and summary_path.exists()):
        return None
    existing = json.loads(config_path.read_text())
    if any(existing.get(s) != config[s] for s in ("format", "options")):
        return None
    names = existing["plan"]
    if all((out_dir / f"{n}.tar").exists() and (out_dir / PARTS_DIR / f"{n}.parquet").exists() for n in names):
        return ShardSummary(json.loads(summary_path.read_text()), already_complete=True)
    return None


def shard_vg(
    vg_root: Path, out_dir: Path, options: ShardOptions, progress: ShardProgress | None = None
) -> ShardSummary:
    """Shard a Visual Genome root into `out_dir` (see the module docstring)."""
    started = time.perf_counter()
    vg.annotation_files(vg_root, options.relations)  # fail on a wrong root before any worker starts
    check_output_dir(out_dir)
    base_config = {"format": FORMAT_VERSION, "options": options.output_affecting()}
    finished = _finished_summary(out_dir, base_config)
    if finished is not None:
        return finished

    workers = options.resolved_workers()
    with _worker_pool(workers) as pool:
        if progress and workers < options.workers:
            progress.note(f"workers: {workers} (the cores available), not {options.workers}")
        if progress:
            progress.note("reading annotations")
        annotations = vg.load_vg(
            vg_root, pool.pool if pool else None, workers, options.max_phrase_chars,
            progress.annotations if progress else None, options.relations,
        )
        image_ids = annotations.images.column("image_id").to_numpy()
        plan = plan_shards(image_ids, options)
        coco_files = {f"coco:{p}": Path(p) for p in options.coco_instances}
        coco_by_image = _coco_by_image(annotations, options)
        config = dict(base_config, inputs=vg.input_fingerprint({**annotations.files, **coco_files}), plan=list(plan))
        (out_dir / PARTS_DIR).mkdir(parents=True, exist_ok=True)
        _check_or_write_config(out_dir, config)
        _remove_temporaries(out_dir)

        todo = [n for n in plan if not (out_dir / PARTS_DIR / f"{n}.parquet").exists()]
        if progress:
            progress.start(sum(len(plan[n]) for n in todo), len(plan), len(plan) - len(todo))
        image_files = vg.index_image_files(vg_root)
        tasks = _build_tasks(annotations, plan, todo, image_files, out_dir, options, coco_by_image)
        try:
            _run_tasks(tasks, pool, progress)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise UserError(f"cannot write to {out_dir}: no space left on device") from None
            raise
    summary = _summarise(out_dir, plan, annotations, options, time.perf_counter() - started)
    return ShardSummary(summary)


def _mask_summary(columns: dict, ok: np.ndarray, options: ShardOptions) -> dict:
    """Regions by the source of their mask, and what the COCO matching did."""
    def total(column: str) -> int:
        return int(sum(v or 0 for v, good in zip(columns[column], ok) if good))

    kept = total("regions_kept")
    coco_masks = total(f"coco_{coco.COUNT_MATCHED}")
    summary = {"regions_by_source": {segmasks.SOURCE_BOX: kept - coco_masks, segmasks.SOURCE_COCO: coco_masks}}
    if options.coco_instances:
        summary["coco"] = {name: total(f"coco_{name}") for name in coco.COUNTS}
        summary["coco"]["min_iou"] = options.coco_min_iou
    return summary


def _coco_by_image(annotations: vg.VgAnnotations, options: ShardOptions) -> dict[int, coco.CocoImage]:
    """VG image id -> its COCO instances, for the images that are COCO photos."""
    if not options.coco_instances:
        return {}
    images = annotations.images
    pairs = [
        (vg_id, coco_id)
        for vg_id, coco_id in zip(images.column("image_id").to_pylist(), images.column("coco_id").to_pylist())
        if coco_id is not None
    ]
    if not pairs:
        raise UserError("--coco-instances: no image in image_data.json has a coco_id, so no COCO mask can apply")
    by_coco = coco.load_instances([Path(p) for p in options.coco_instances], {c for _, c in pairs})
    return {vg_id: by_coco[coco_id] for vg_id, coco_id in pairs if coco_id in by_coco}


def _summarise(
    out_dir: Path, plan: dict[str, np.ndarray], annotations: vg.VgAnnotations,
    options: ShardOptions, seconds: float,
) -> dict:
    manifest = pa.concat_tables(pq.read_table(out_dir / PARTS_DIR / f"{n}.parquet") for n in plan)
    with atomic_output(out_dir / "manifest.parquet") as temp:
        pq.write_table(manifest, temp)

    columns = manifest.to_pydict()
    ok = np.array([s == "ok" for s in columns["status"]], bool)
    sizes = Counter(s for s, good in zip(columns["shard"], ok) if good)
    sizes_by_file = {f"{n}.tar": sizes.get(f"{n}.tar", 0) for n in plan}
    write_json_atomically(out_dir / "sizes.json", sizes_by_file, sort_keys=True)

    def total(column: str, where: np.ndarray | None = None) -> int:
        values = np.array(columns[column], dtype=np.float64)
        values = np.nan_to_num(values)
        return int(values[where].sum() if where is not None else values.sum())

    region_drops = Counter(annotations.region_drops)
    for reason in reasons.REGION_DROP_CODES[1:]:
        region_drops[reason] += total(f"drop_{reason}", ok)
    image_fixes = Counter(f for fixes, good in zip(columns["image_fixes"], ok) if good for f in fixes)
    data_bytes = {c: total(c, ok) for c in ("jpg_bytes", "mask_bytes", "meta_bytes")}
    tar_bytes = sum((out_dir / f"{n}.tar").stat().st_size for n in plan)
    listed_regions = total("regions_listed") + sum(annotations.region_drops.values())
    summary = {
        "complete": True,
        "images": {
            "listed": len(ok),
            "written": int(ok.sum()),
            "skipped": dict(sorted(Counter(s for s in columns["status"] if s != "ok").items())),
            "fixed": dict(sorted(image_fixes.items())),
            "written_by_split": {s: int(sum(1 for sp, g in zip(columns["split"], ok) if g and sp == s)) for s in SPLITS},
        },
        "regions": {
            "listed": listed_regions,
            "kept": total("regions_kept", ok),
            "in_skipped_images": total("regions_listed", ~ok),
            "dropped": dict(sorted((r, c) for r, c in region_drops.items() if c)),
            "fixed": {r: total(f"fix_{r}", ok) for r in reasons.REGION_FIXES},
        },
        "shards": {s: sum(1 for n in plan if n.startswith(f"{s}-")) for s in SPLITS},
        "bytes": dict(
            data_bytes,
            tar_total=tar_bytes,
            mask_fraction=round(data_bytes["mask_bytes"] / max(1, tar_bytes), 4),
        ),
        "masks": _mask_summary(columns, ok, options),
        **({} if annotations.relations is None else {"relations": _relation_summary(annotations, total, ok)}),
        "options": options.output_affecting(),
        "last_run_seconds": round(seconds, 2),
    }
    write_json_atomically(out_dir / "summary.json", summary, sort_keys=True)
    return summary


def _relation_summary(annotations: vg.VgAnnotations, total: Callable[..., int], ok: np.ndarray) -> dict:
    """The summary's "relations" section, like "regions": listed, kept, dropped by reason."""
    drops = Counter(annotations.relation_drops)
    for reason in reasons.REGION_DROP_CODES[1:]:
        drops[reason] += total(f"relation_drop_{reason}", ok)
    return {
        "listed": total("relations_listed") + sum(annotations.relation_drops.values()),
        "kept": total("relations_kept", ok),
        "in_skipped_images": total("relations_listed", ~ok),
        "dropped": dict(sorted((r, c) for r, c in drops.items() if c)),
    }
