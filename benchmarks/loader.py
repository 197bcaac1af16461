"""Loader throughput beside its ceilings, a naive baseline and its peers, in one run, on the same shards.

- decode_ceiling: decode each stored JPEG to a uint8 array with PIL, nothing else (one core): the
  ceiling the goal of issue 13 is stated against. decode_ceiling_simplejpeg: the same with the
  loader's own decoder (same pixels, ~1.6x faster), the stricter yardstick.
- decode_resize_ceiling: PIL decode plus one crop-resize to the model's size: the least any
  loader producing size x size crops must do per image.
- stages: the loader's per-image costs, stage by stage, in this process (thread CPU time, best of
  3), and `levers`: each optimisation's cost before and after, measured in the same pass.
- naive_workers_N: the approach this loader replaces: every view decodes its image again, crops and
  resizes image and mask with PIL, converts to normalised float32 in the worker, default collate.
- loader_workers_N: fcdata.loader end to end through a DataLoader with N workers (tar reading,
  shuffling, region sampling, crop/flip, alphas, tokenisation, collation, IPC).
  loader_device_decode_workers_N: the same with data.decode = "device": the workers' share of
  that path (the JPEGs are decoded where the batches land: on the GPU in training, here on the
  host's CPU, which its worker CPU time does not count).
- peers (fcbench.loader_peers): webdataset as open_clip builds it, SPDL, DALI's CPU pipeline.
- loader_to_gpu_workers_N (CUDA only): the same batches carried on by the trainer's Prefetcher
  (pinned copy and normalisation on a side stream): what a GPU training step can be fed. Compare
  with samples_per_s of `fc bench step` on the same machine.

Rates per core are per CPU second, not per wall second: the CPU time of the loader's worker
processes (from /proc) while the timed views were made, so a machine shared with other jobs gives
the same figures as an idle one (wall-clock rates are reported beside them). Each repeat runs
every case back to back; rows give medians. Views per image = regions_per_image (2).
"""

from __future__ import annotations

import io
import itertools
import json
import os
import random
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from fcbench.common import emit, machine_info, record
from fcdata.errors import UserError

PEERS = ("webdataset", "spdl", "dali")
PEER_UNITS = {"webdataset": "workers", "spdl": "threads", "dali": "threads"}  # what a row's count means


def _decode_pass(samples: list[dict], size: int | None, decoder: str = "pil") -> float:
    """Images per CPU second of decode (+ one crop-resize to size) over the samples, in this thread."""
    from PIL import Image

    from fcdata import keys

    started = time.thread_time()
    for sample in samples:
        if decoder == "simplejpeg":
            import simplejpeg

            simplejpeg.decode_jpeg(sample[keys.IMAGE])
            continue
        image = Image.open(io.BytesIO(sample[keys.IMAGE]))
        if size is not None:
            width, height = image.size
            image = image.resize((size, size), Image.Resampling.BILINEAR, box=(0, 0, 0.8 * width, 0.8 * height))
        np.asarray(image.convert("RGB"))
    return len(samples) / (time.thread_time() - started)


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


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far (Linux /proc; 0 elsewhere)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat(5)
    return total / os.sysconf("SC_CLK_TCK")


def _views_of(batch) -> int:
    """Views in a batch: a RegionBatch, the naive loader's [pixels, alphas, phrases] (one view
    each), or a peer's (images N x S x S x 3, alphas N x views x S x S)."""
    if not isinstance(batch, (list, tuple)):
        return len(batch)
    alphas = batch[1]
    return alphas.shape[0] * (alphas.shape[1] if batch[0].shape[-1] == 3 else 1)


def _measure(batches, views: int, count_views=_views_of) -> dict:
    """Views, wall seconds, and the CPU seconds of the loader's worker processes and of this one
    over the first `views` views (start-up left out: timing starts at the first batch)."""
    iterator = iter(batches)
    next(iterator)  # worker start-up ends with the first batch
    pids = [worker.pid for worker in getattr(iterator, "_workers", [])]
    workers_before, own_before, started = _cpu_seconds(pids), time.process_time(), time.perf_counter()
    count = 0
    for batch in iterator:
        count += count_views(batch)
        if count >= views:
            break
    wall = time.perf_counter() - started
    result = {"views": count, "wall_s": wall, "worker_cpu_s": _cpu_seconds(pids) - workers_before,
              "own_cpu_s": time.process_time() - own_before}
    del iterator
    if count == 0:
        raise UserError("the corpus fills only one batch, so there is nothing to time: use more --images")
    return result


def _measure_on_gpu(loader, views: int) -> dict:
    """The loader's batches normalised on the GPU, as the trainer gets them."""
    from fcdata.loader import Prefetcher

    device = torch.device("cuda")
    result = _measure(Prefetcher(loader, device), views)
    torch.cuda.synchronize(device)  # the copies queued by the last batch are not in the rate; small
    return result


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
    peers: tuple[str, ...] = PEERS, stages: bool = True,
) -> list[dict]:
    """`views`: how many views each case is timed over (default: half the corpus' views, at most
    4000); the stream is endless, so more than the corpus holds is fine (many workers need it).
    `stages`: also time the per-image stages and levers in this process (~15 s)."""
    import dataclasses

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

    def keep_run(name: str, result: dict, count: int) -> None:
        """Rates of one timed run: views per wall second, images per worker CPU second (per core)."""
        keep(f"{name}_wall", result["views"] / result["wall_s"])
        cpu = result["worker_cpu_s"] if count else result["own_cpu_s"]  # in-process peers: their threads
        keep(f"{name}_core", result["views"] / views_per_image / cpu)
        keep(f"{name}_own_ms_per_batch", 1000 * result["own_cpu_s"] / max(1, result["views"] / batch_size))

    stage_rows = stage_costs(samples[:300], size, tokenizer) if stages else []
    for _ in range(repeats):
        keep("decode", _decode_pass(samples, None))
        keep("decode_simplejpeg", _decode_pass(samples, None, "simplejpeg"))
        keep("decode_resize", _decode_pass(samples, size))
        for count in workers:
            options = LoaderOptions(batch_size=batch_size, regions_per_image=views_per_image, workers=count, shuffle_buffer=200)
            keep_run(f"w{count}", _measure(make_loader(RegionStream(shards, options, tokenizer, size)), measure), count)
            device_options = dataclasses.replace(options, decode="device")
            keep_run(f"w{count}_device", _measure(make_loader(RegionStream(shards, device_options, tokenizer, size)), measure), count)
            naive = torch.utils.data.DataLoader(
                NaiveViews(shards, size, views_per_image), batch_size=batch_size,
                num_workers=count, multiprocessing_context="forkserver" if count else None,
            )
            keep_run(f"w{count}_naive", _measure(naive, measure), count)
            for peer in peers:
                _run_peer(peer, shards, size, batch_size // views_per_image, count, measure, keep_run, keep)
            if torch.cuda.is_available():
                stream = RegionStream(shards, options, tokenizer, size)
                keep(f"w{count}_gpu", _rate_of(_measure_on_gpu(make_loader(stream), measure)))
                stream = RegionStream(shards, device_options, tokenizer, size)
                try:  # nvJPEG through torchvision, which a GPU machine may lack
                    keep(f"w{count}_device_gpu", _rate_of(_measure_on_gpu(make_loader(stream), measure)))
                except UserError as exc:
                    keep(f"w{count}_device_gpu_error", str(exc))

    def median(name: str, digits: int = 1) -> float:
        return round(float(statistics.median(samples_of[name])), digits)

    base = {
        "bench": "loader", "images": len(samples), "size": size, "views_per_image": views_per_image, "repeats": repeats,
        "skipped": dict(sorted(handler.counts.items())),  # unreadable shards and samples, by reason
    }
    ceiling, strict = median("decode"), median("decode_simplejpeg")
    rows = [
        dict(base, case="decode_ceiling", images_per_cpu_s=ceiling, decoder="PIL"),
        dict(base, case="decode_ceiling_simplejpeg", images_per_cpu_s=strict, decoder="simplejpeg", vs_decode_ceiling=round(strict / ceiling, 3)),
        dict(base, case="decode_resize_ceiling", images_per_cpu_s=median("decode_resize"), vs_decode_ceiling=round(median("decode_resize") / ceiling, 3)),
        *[dict(base, **row) for row in stage_rows],
    ]

    def measured(case: str, name: str, count: int, **extra) -> dict:
        core = median(f"{name}_core")
        return dict(
            base, case=case, workers=count, samples_per_s=median(f"{name}_wall"),
            images_per_cpu_s_per_core=core, per_core_vs_decode_ceiling=round(core / ceiling, 3),
            per_core_vs_simplejpeg_ceiling=round(core / strict, 3),
            consumer_cpu_ms_per_batch=median(f"{name}_own_ms_per_batch", 2), **extra,
        )

    for count in workers:
        rows.append(measured(f"naive_workers_{count}", f"w{count}_naive", count))
        rows.append(measured(f"loader_workers_{count}", f"w{count}", count,
                             vs_naive_per_core=round(median(f"w{count}_core") / median(f"w{count}_naive_core"), 3)))
        rows.append(measured(f"loader_device_decode_workers_{count}", f"w{count}_device", count,
                             note="worker side only: the JPEGs are decoded where the batches land"))
        for peer in peers:
            name = f"w{count}_{peer}"
            if f"{name}_core" in samples_of:
                rows.append(measured(f"{peer}_{PEER_UNITS[peer]}_{count}", name, count,
                                     loader_vs_peer_per_core=round(median(f"w{count}_core") / median(f"{name}_core"), 3)))
            else:
                rows.append(dict(base, case=f"{peer}_{PEER_UNITS[peer]}_{count}", workers=count, skipped=samples_of.get(f"{name}_error", ["?"])[0]))
        for suffix, case in (("gpu", "loader_to_gpu"), ("device_gpu", "loader_device_decode_to_gpu")):
            if f"w{count}_{suffix}" in samples_of:
                rows.append(dict(base, case=f"{case}_workers_{count}", workers=count, samples_per_s=median(f"w{count}_{suffix}")))
            elif f"w{count}_{suffix}_error" in samples_of:
                rows.append(dict(base, case=f"{case}_workers_{count}", workers=count, skipped=samples_of[f"w{count}_{suffix}_error"][0]))
    for row in rows:
        emit(row)
    if save:
        emit({"bench": "loader", "recorded": str(record("loader", rows, machine))})
    return rows


def _rate_of(result: dict) -> float:
    return result["views"] / result["wall_s"]


def _run_peer(peer: str, shards: list[str], size: int, batch_images: int, count: int, views: int, keep_run, keep) -> None:
    """One timed run of a peer with `count` workers (threads for the in-process ones); an error
    (not installed, cannot run here) is kept as the row's reason instead."""
    from fcbench import loader_peers

    try:
        if peer == "webdataset":
            keep_run(f"w{count}_{peer}", _measure(loader_peers.webdataset_loader(shards, size, batch_images, count), views), count)
        elif peer == "spdl":
            pipeline = loader_peers.spdl_batches(shards, size, batch_images, max(1, count))
            with pipeline.auto_stop():
                keep_run(f"w{count}_{peer}", _measure(pipeline.get_iterator(timeout=120), views), 0)
        elif peer == "dali":
            pipeline = loader_peers.dali_pipeline(shards, size, batch_images, max(1, count))
            batches = (pipeline.run()[0].as_array() for _ in itertools.count())  # N x S x S x (3 + views) uint8
            keep_run(f"w{count}_{peer}", _measure(batches, views, lambda crops: crops.shape[0] * loader_peers.VIEWS), 0)
    except Exception as exc:  # noqa: BLE001 - any failure of an optional peer becomes its row's reason
        keep(f"w{count}_{peer}_error", f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}")


def stage_costs(samples: list[dict], size: int, tokenizer) -> list[dict]:
    """Per-image costs of the loader's stages (ms of thread CPU time, best of 3 passes over the
    samples, in this process), and what each lever of issue 13 bought: the stage before and after."""
    from PIL import Image

    from fcdata import augment, jpeg, keys, masks
    from fcdata.captions import CaptionTokens, tokenize_captions
    from fcdata.options import LoaderOptions

    options = LoaderOptions(batch_size=128, regions_per_image=2)
    metas = [json.loads(s[keys.META]) for s in samples]
    regions = [augment.SampleRegions.of(m, options.full_image_min_cover) for m in metas]
    chosen = [augment.choose_regions(r, 2, options, random.Random(n)) for n, r in enumerate(regions)]
    boxes = [augment.random_crop(r, c, options, random.Random(n)) for n, (r, c) in enumerate(zip(regions, chosen))]
    decoded = [jpeg.decode_for_resize(s[keys.IMAGE], size) for s in samples]
    # Crops in decoded pixels (an image decoded at a reduced DCT scale takes its box divided alike).
    image_boxes = [np.minimum(b / np.array([m["width"] / d.size[0], m["height"] / d.size[1]] * 2), d.size * 2)
                   for b, m, d in zip(boxes, metas, decoded)]
    pictures = [d.resize((size, size), Image.Resampling.BILINEAR, box=tuple(b.tolist())) for d, b in zip(decoded, image_boxes)]
    profiles = [masks.decode_profiles(s[keys.MASK_PROFILES], m["height"], c.tolist()) for s, m, c in zip(samples, metas, chosen)]
    phrases = [[r.phrases[k] for k in c.tolist()] for r, c in zip(regions, chosen)]
    batches = [sum(phrases[i : i + 64], []) for i in range(0, len(phrases), 64)]
    cached = CaptionTokens(tokenizer, 77)
    for batch in batches:
        cached(batch)  # warm: the steady state of a worker (every caption of a batch seen before)

    def cost(each) -> float:
        best = float("inf")
        for _ in range(3):
            started = time.thread_time()
            for index in range(len(samples)):
                each(index)
            best = min(best, time.thread_time() - started)
        return round(1000 * best / len(samples), 4)

    def per_batch(each) -> float:  # a batch's cost spread over its images
        best = float("inf")
        for _ in range(3):
            started = time.thread_time()
            for batch in batches:
                each(batch)
            best = min(best, time.thread_time() - started)
        return round(1000 * best / len(samples), 4)

    slot = np.empty((size, size, 3), np.uint8)

    def pil_decode(i):
        image = Image.open(io.BytesIO(samples[i][keys.IMAGE]))
        image.draft("RGB", (size, size))
        image.convert("RGB")

    def copy_to_batch(i):
        slot[...] = jpeg.rgb(pictures[i], i % 2 == 1)

    stages = {
        "json_ms": cost(lambda i: augment.orjson.loads(samples[i][keys.META])),
        "regions_ms": cost(lambda i: augment.SampleRegions.of(metas[i], options.full_image_min_cover)),
        "choose_ms": cost(lambda i: augment.choose_regions(regions[i], 2, options, random.Random(i))),
        "profiles_ms": cost(lambda i: masks.decode_profiles(samples[i][keys.MASK_PROFILES], metas[i]["height"], chosen[i].tolist())),
        "decode_ms": cost(lambda i: jpeg.decode_for_resize(samples[i][keys.IMAGE], size)),
        "crop_ms": cost(lambda i: augment.random_crop(regions[i], chosen[i], options, random.Random(i))),
        "resize_ms": cost(lambda i: decoded[i].resize((size, size), Image.Resampling.BILINEAR, box=tuple(image_boxes[i].tolist()))),
        "alphas_ms": cost(lambda i: augment.region_alphas(*profiles[i], chosen[i], boxes[i], size, False)),
        "copy_to_batch_ms": cost(copy_to_batch),
        "tokens_ms": per_batch(cached),
        "train_views_ms": cost(lambda i: augment.train_views(samples[i], 2, size, options, random.Random(i))),
    }
    levers = {
        "decode_ms": (cost(pil_decode), stages["decode_ms"]),  # PIL decode + convert -> simplejpeg into PIL's buffer
        "json_ms": (cost(lambda i: json.loads(samples[i][keys.META])), stages["json_ms"]),  # json -> orjson
        "tokens_ms": (per_batch(lambda b: tokenize_captions(tokenizer, b, max_length=77, return_tensors="np")), stages["tokens_ms"]),
    }
    return [
        dict(case="stages", unit="ms per image, thread CPU", **stages),
        dict(case="levers", unit="ms per image, thread CPU: [before, after]", **{k: list(v) for k, v in levers.items()},
             saved_ms_per_image=round(sum(b - a for b, a in levers.values()), 4)),
    ]
