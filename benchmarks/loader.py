"""Loader throughput beside its ceiling and a naive baseline, in one run, on the same shards.

- decode_ceiling: decode each stored JPEG to a uint8 array, nothing else (one core).
- decode_resize_ceiling: the same plus one crop-resize to the model's size: the least any loader
  producing size x size crops must do per image.
- naive_workers_N: the approach this loader replaces: every view decodes its image again, crops and
  resizes image and mask with PIL, converts to normalised float32 in the worker, default collate.
- loader_workers_N: fcdata.loader end to end through a DataLoader with N workers (tar reading,
  shuffling, region sampling, crop/flip, alphas, tokenisation, collation, IPC).
- loader_to_gpu_workers_N (CUDA only): the same batches carried on by the trainer's Prefetcher
  (pinned copy and normalisation on a side stream): what a GPU training step can be fed. Compare
  with samples_per_s of `fc bench step` on the same machine.

Each repeat runs every case back to back and ratios are taken within a repeat (this machine's
speed drifts); rows give medians. Views per image = regions_per_image (2).
"""

from __future__ import annotations

import io
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from fcbench.common import emit, machine_info, record
from fcdata.errors import UserError


def _decode_pass(samples: list[dict], size: int | None) -> float:
    """images/s of decode (+ one crop-resize to size) over the samples, in this process."""
    from PIL import Image

    from fcdata import keys

    started = time.perf_counter()
    for sample in samples:
        image = Image.open(io.BytesIO(sample[keys.IMAGE]))
        if size is not None:
            width, height = image.size
            image = image.resize((size, size), Image.Resampling.BILINEAR, box=(0, 0, 0.8 * width, 0.8 * height))
        np.asarray(image.convert("RGB"))
    return len(samples) / (time.perf_counter() - started)


class NaiveViews(torch.utils.data.IterableDataset):
    """The baseline: per view, decode the full image again, PIL crop+resize image and mask,
    float conversion and normalisation in the worker."""

    def __init__(self, shards: list[str], size: int, views_per_image: int):
        self.shards, self.size, self.views_per_image = shards, size, views_per_image

    def __iter__(self):
        from fcdata import guard
        from fcdata.errors import CountingHandler

        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        handler = CountingHandler(f"naive loader worker {worker}")
        for views in guard.decoded(guard.read_raw(self.shards[worker::workers], handler), self._views, handler):
            yield from views

    def _views(self, sample: dict) -> list[tuple[torch.Tensor, torch.Tensor, str]]:
        from PIL import Image

        from fcdata import keys
        from fcdata.transforms import ALPHA_MEAN, ALPHA_STD, CLIP_MEAN, CLIP_STD

        mean = np.array(CLIP_MEAN, np.float32) * 255
        std = np.array(CLIP_STD, np.float32) * 255
        meta = json.loads(sample[keys.META])
        views = []
        for box in meta["regions"]["box"][: self.views_per_image]:
            image = Image.open(io.BytesIO(sample[keys.IMAGE])).convert("RGB")
            width, height = image.size
            mask = Image.new("L", (width, height))
            mask.paste(255, tuple(box))
            crop = (0, 0, 0.8 * width, 0.8 * height)
            pixels = np.asarray(image.crop(crop).resize((self.size, self.size), Image.Resampling.BILINEAR), np.float32)
            alpha = np.asarray(mask.crop(crop).resize((self.size, self.size), Image.Resampling.BILINEAR), np.float32)
            views.append((
                torch.from_numpy(((pixels - mean) / std).transpose(2, 0, 1).copy()),
                torch.from_numpy(((alpha / 255 - ALPHA_MEAN) / ALPHA_STD)[None]),
                meta["regions"]["phrase"][0],
            ))
        return views


def _readable(sample: dict) -> dict:
    """The sample, once its JSON parses and its JPEG decodes (the ceilings time only good ones)."""
    from PIL import Image

    from fcdata import keys

    json.loads(sample[keys.META])
    with Image.open(io.BytesIO(sample[keys.IMAGE])) as image:
        image.load()
    return sample


def _rate(loader, views: int) -> float:
    """Views per second over the first `views` views (worker start-up left out: timing starts at
    the first batch)."""
    iterator = iter(loader)
    next(iterator)  # worker start-up ends with the first batch
    count, started = 0, time.perf_counter()
    for batch in iterator:
        count += len(batch[0]) if isinstance(batch, (list, tuple)) else len(batch)
        if count >= views:
            break
    del iterator
    if count == 0:
        raise UserError("the corpus fills only one batch, so there is nothing to time: use more --images")
    return count / (time.perf_counter() - started)


def _rate_on_gpu(loader, views: int) -> float:
    """Views per second of the loader's batches normalised on the GPU, as the trainer gets them."""
    from fcdata.loader import Prefetcher

    device = torch.device("cuda")
    rate = _rate(Prefetcher(loader, device), views)
    torch.cuda.synchronize(device)  # the copies queued by the last batch are not in the rate; small
    return rate


def ensure_shards(work_dir: Path, images: int, seed: int = 0) -> Path:
    """Shards of a generated VG-like corpus (~50 regions per image), made once and reused."""
    from fcbench.shard import ensure_corpus
    from fcdata.options import ShardOptions
    from fcdata.shard import shard_vg

    root = ensure_corpus(work_dir, images, 50, seed)
    out = work_dir / f"shards-{root.name}"
    shard_vg(root, out, ShardOptions(shard_samples=100, val_fraction=0.0))
    return out


def run(
    shard_dir: Path | None, work_dir: Path, images: int = 1000, size: int = 224, batch_size: int = 128,
    workers: tuple[int, ...] = (1, 2), repeats: int = 3, save: bool = True, views: int | None = None,
) -> list[dict]:
    """`views`: how many views each case is timed over (default: half the corpus' views, at most
    4000); the stream is endless, so more than the corpus holds is fine (many workers need it)."""
    from fcdata import guard
    from fcdata.errors import CountingHandler
    from fcdata.loader import RegionStream, make_loader, resolve_shards
    from fcdata.options import LoaderOptions
    from fctrain.tokenizer import build_tokenizer

    machine = machine_info()
    emit({"bench": "loader", "machine": machine})
    shard_dir = shard_dir or ensure_shards(work_dir, images)
    shards = resolve_shards(str(shard_dir), "train")
    guard.check_shards(shards)
    handler = CountingHandler("fc bench loader")
    samples = list(guard.decoded(guard.read_raw(shards, handler), _readable, handler))
    guard.require_any(len(samples), handler, "shards")
    phrases = [p for s in samples[:500] for p in json.loads(s["json"])["regions"]["phrase"]]
    tokenizer = build_tokenizer(phrases, work_dir / "tokenizer")
    views_per_image = 2
    measure = views or min(len(samples) * views_per_image // 2, 4000)

    samples_of: dict[str, list[float]] = {}

    def keep(name: str, value: float) -> None:
        samples_of.setdefault(name, []).append(value)

    for _ in range(repeats):
        decode = _decode_pass(samples, None)
        keep("decode", decode)
        keep("decode_resize", _decode_pass(samples, size))
        for count in workers:
            options = LoaderOptions(batch_size=batch_size, regions_per_image=views_per_image, workers=count, shuffle_buffer=200)
            rate = _rate(make_loader(RegionStream(shards, options, tokenizer, size)), measure)
            naive = torch.utils.data.DataLoader(
                NaiveViews(shards, size, views_per_image), batch_size=batch_size,
                num_workers=count, multiprocessing_context="forkserver",
            )
            naive_rate = _rate(naive, measure)
            keep(f"w{count}", rate)
            keep(f"w{count}_naive", naive_rate)
            keep(f"w{count}_per_worker_vs_decode", rate / views_per_image / count / decode)
            keep(f"w{count}_vs_naive", rate / naive_rate)
            if torch.cuda.is_available():
                stream = RegionStream(shards, options, tokenizer, size)
                keep(f"w{count}_gpu", _rate_on_gpu(make_loader(stream), measure))

    def median(name: str, digits: int = 1) -> float:
        return round(float(statistics.median(samples_of[name])), digits)

    base = {
        "bench": "loader", "images": len(samples), "size": size, "views_per_image": views_per_image, "repeats": repeats,
        "skipped": dict(sorted(handler.counts.items())),  # unreadable shards and samples, by reason
    }
    rows = [
        dict(base, case="decode_ceiling", images_per_s=median("decode")),
        dict(base, case="decode_resize_ceiling", images_per_s=median("decode_resize")),
    ]
    for count in workers:
        rows.append(dict(base, case=f"naive_workers_{count}", workers=count, samples_per_s=median(f"w{count}_naive")))
        rows.append(
            dict(
                base, case=f"loader_workers_{count}", workers=count, samples_per_s=median(f"w{count}"),
                images_per_s_per_worker=round(median(f"w{count}") / views_per_image / count, 1),
                per_worker_vs_decode_ceiling=median(f"w{count}_per_worker_vs_decode", 3),
                vs_naive=median(f"w{count}_vs_naive", 3),
            )
        )
        if f"w{count}_gpu" in samples_of:
            rows.append(dict(base, case=f"loader_to_gpu_workers_{count}", workers=count, samples_per_s=median(f"w{count}_gpu")))
    for row in rows:
        emit(row)
    if save:
        emit({"bench": "loader", "recorded": str(record("loader", rows, machine))})
    return rows
