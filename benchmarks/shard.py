"""Shard throughput beside its ceiling and a baseline, all in one run on the same images.

- codec_ceiling: what a worker cannot beat: read, draft-decode, resize, JPEG-encode each image
  (no masks, no tar, no manifest), in this process.
- baseline_full_decode: the plain approach: full decode without DCT scaling, resize, encode.
- fc_shard_workers_N: `shard_vg` with N workers. `images_per_s`: end to end (annotation parsing,
  worker start-up, masks, JSON, tar, manifest, summary). `work_images_per_s`: from the first
  image begun to the last one done (`startup_s`: the wait for the workers before it).
  `per_core_images_per_s`: images per second a worker was busy, the figure to hold against the
  ceiling.

With `annotation_scale` > 0, also the annotation phase on VG-size files beside json.load and
orjson, with peak memory (fcbench.annotations).

Ratios, not absolute numbers, are what carries between machines: per core vs ceiling (goal
>= 0.85), work rate with 2 workers vs 1 (goal near 2), ceiling vs baseline.
"""

from __future__ import annotations

import io
import shutil
import statistics
import time
from pathlib import Path

from fcbench.common import emit, machine_info, record


class _Clock:
    """A ShardProgress that keeps time: when work started and ended, and how long workers were busy."""

    def __init__(self) -> None:
        self.started = self.last = None
        self.first_work = float("inf")  # when the earliest batch of images began, in a worker
        self.images = 0
        self.busy_seconds = 0.0

    def note(self, message: str) -> None:
        pass

    def annotations(self, name: str, scanned_bytes: int, total_bytes: int, decoded: int, records: int) -> None:
        pass

    def start(self, images: int, shards: int, shards_done: int) -> None:
        self.started = time.perf_counter()

    def advance(self, images: int, skipped: int, busy_seconds: float) -> None:
        self.last = time.perf_counter()
        self.first_work = min(self.first_work, self.last - busy_seconds)
        self.images += images
        self.busy_seconds += busy_seconds

    def shard_done(self) -> None:
        pass

    def per_core_rate(self) -> float:
        """Images per second of one worker while it worked (no start-up, no parsing)."""
        return self.images / self.busy_seconds

    def work_rate(self) -> float:
        """Images per wall-clock second from the first image begun to the last one done.

        Not from the first task handed out: on a small corpus the annotations are read before the
        spawned workers have finished importing, and that start-up (reported as startup_s) made
        2 workers look like 1.5x one worker in-process, which has none."""
        return self.images / (self.last - self.first_work)

    def startup_s(self) -> float:
        """From the tasks being ready to the first image begun (worker start-up left over)."""
        return max(0.0, self.first_work - self.started)


def _codec_pass(paths: list[Path], options, draft: bool) -> float:
    """images/s of decode (+draft) -> RGB -> resize -> JPEG encode over all paths."""
    from PIL import Image

    from fcdata.encode import target_size

    started = time.perf_counter()
    for path in paths:
        with open(path, "rb") as stream:
            image = Image.open(io.BytesIO(stream.read()))
        target = target_size(*image.size, options)
        if draft and image.format == "JPEG":
            image.draft(image.mode, target)
        image = image.convert("RGB")
        if image.size != target:
            image = image.resize(target, Image.Resampling.BILINEAR)
        image.save(io.BytesIO(), "JPEG", quality=options.jpeg_quality)
    return len(paths) / (time.perf_counter() - started)


def ensure_corpus(work_dir: Path, images: int, regions_per_image: int, seed: int) -> Path:
    """A synthetic VG corpus under work_dir, generated once and reused."""
    from fcdata.options import SynthOptions
    from fcdata.synth import generate_vg

    root = work_dir / f"vg-{images}-r{regions_per_image}-s{seed}"
    if not (root / "synth_report.json").exists():
        generate_vg(root, SynthOptions(num_images=images, seed=seed, regions_per_image=regions_per_image, workers=0))
    return root


def run(
    vg_root: Path | None,
    work_dir: Path,
    images: int = 1000,
    regions_per_image: int = 50,
    repeats: int = 3,
    workers: tuple[int, ...] = (1, 2),
    save: bool = True,
    annotation_scale: float = 1.0,
) -> list[dict]:
    """Each repeat runs every case back to back, and ratios are taken within a repeat: this
    machine's speed drifts by 10% over minutes, which pairing cancels. Rows give medians."""
    from fcdata import vg
    from fcdata.options import ShardOptions
    from fcdata.shard import shard_vg, warm_up_kernels

    machine = machine_info()
    emit({"bench": "shard", "machine": machine})
    work_dir.mkdir(parents=True, exist_ok=True)
    root = vg_root or ensure_corpus(work_dir, images, regions_per_image, seed=0)
    files = vg.index_image_files(root)
    paths = [files[i] for i in sorted(files)]
    warm_up_kernels()  # compile the numba kernels into their cache outside the timed runs
    _codec_pass(paths[:20], ShardOptions(), draft=True)  # warm the decoders and the page cache

    samples: dict[str, list[float]] = {}

    def keep(name: str, value: float) -> None:
        samples.setdefault(name, []).append(value)

    for _ in range(repeats):
        ceiling = _codec_pass(paths, ShardOptions(), draft=True)
        baseline = _codec_pass(paths, ShardOptions(), draft=False)
        keep("ceiling", ceiling)
        keep("baseline", baseline)
        keep("ceiling_vs_baseline", ceiling / baseline)
        for count in workers:
            out = work_dir / f"out-w{count}"
            shutil.rmtree(out, ignore_errors=True)
            clock = _Clock()
            started = time.perf_counter()
            # Two shards per worker: enough to keep each busy, as few shard boundaries as that allows.
            options = ShardOptions(workers=count, shard_samples=max(50, len(paths) // (2 * count)))
            summary = shard_vg(root, out, options, clock)
            keep(f"w{count}_end_to_end", summary.data["images"]["listed"] / (time.perf_counter() - started))
            keep(f"w{count}_work", clock.work_rate())
            keep(f"w{count}_startup_s", clock.startup_s())
            keep(f"w{count}_per_core", clock.per_core_rate())
            keep(f"w{count}_per_core_vs_ceiling", clock.per_core_rate() / ceiling)
            if count != workers[0]:
                keep(f"w{count}_scaling", clock.work_rate() / samples[f"w{workers[0]}_work"][-1])
            keep("mask_fraction", summary.data["bytes"]["mask_fraction"])

    def median(name: str, digits: int = 1) -> float:
        return round(float(statistics.median(samples[name])), digits)

    base = {"bench": "shard", "images": len(paths), "corpus": root.name, "repeats": repeats}
    rows = [
        dict(base, case="codec_ceiling", images_per_s=median("ceiling"), per_core_images_per_s=median("ceiling")),
        dict(
            base, case="baseline_full_decode", images_per_s=median("baseline"),
            per_core_images_per_s=median("baseline"), ceiling_vs_baseline=median("ceiling_vs_baseline", 3),
        ),
    ]
    for count in workers:
        row = dict(
            base, case=f"fc_shard_workers_{count}", workers=count,
            images_per_s=median(f"w{count}_end_to_end"),
            work_images_per_s=median(f"w{count}_work"),
            startup_s=median(f"w{count}_startup_s", 2),
            per_core_images_per_s=median(f"w{count}_per_core"),
            per_core_vs_ceiling=median(f"w{count}_per_core_vs_ceiling", 3),
            mask_fraction=median("mask_fraction", 4),
        )
        if count != workers[0]:
            row[f"scaling_vs_{workers[0]}_worker"] = median(f"w{count}_scaling", 3)
        rows.append(row)
    if annotation_scale > 0:
        from fcbench import annotations

        rows += annotations.run(work_dir, annotation_scale, workers)
    for row in rows:
        emit(row)
    if save:
        path = record("shard", rows, machine)
        emit({"bench": "shard", "recorded": str(path)})
    return rows
