"""The peers of `fc bench loader`: the same shards and the same work per image (decode, one
random-resized crop to size x size, a horizontal flip, the alphas of 2 regions cropped and resized
with the image, uint8 batches), built the way each library's users build it.

- webdataset: open_clip's pipeline (`wds.DataPipeline(ResampledShards, tarfile_to_samples,
  shuffle, decode("pilrgb"), map, batched)` through a torch DataLoader), PIL transforms; a region's
  alpha is its mask (the outer product of its row and column profiles) cropped with the image.
- spdl: Meta's SPDL, thread-based in one process: its tar iterator, FFmpeg decode with the crop,
  scale and flip as a filter graph, alphas as above; `concurrency` threads per stage.
- dali: NVIDIA DALI's CPU pipeline: `fn.readers.webdataset`, the CPU image decoder, the masks
  stacked onto the image as channels so one `fn.random_resized_crop` and one `fn.flip` move both.

They do not tokenise captions (this loader does); each is optional (`pip install -e .[bench-spdl]`,
`.[bench-dali]`; webdataset is a core dependency): where one cannot be imported or run, its row
says why and the others still run.
"""

from __future__ import annotations

import io
import math
import random

import numpy as np
import torch

VIEWS = 2  # regions per image, as the loader's rows


def crop_params(width: int, height: int, rng: random.Random, scale=(0.35, 1.0), ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params: (left, top, width, height)."""
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, width - w), rng.randint(0, height - h), w, h
    side = min(width, height)
    return (width - side) // 2, (height - side) // 2, side, side


def region_masks(profiles: np.ndarray, regions: list[int], height: int) -> list[np.ndarray]:
    """H x W uint8 masks of `regions` from a K x (H + W) profile image (0/1 or 0/255)."""
    profiles = profiles.astype(np.uint16) * (255 if profiles.max() <= 1 else 1)
    return [(np.outer(profiles[k, :height], profiles[k, height:]) // 255).astype(np.uint8) for k in regions]


def pil_views(image, meta: dict, profiles: np.ndarray, size: int, rng: random.Random) -> tuple[np.ndarray, np.ndarray]:
    """The PIL transforms of the webdataset and spdl peers: (S x S x 3, VIEWS x S x S) uint8."""
    from PIL import Image

    regions = rng.sample(range(len(meta["regions"]["phrase"])), min(VIEWS, len(meta["regions"]["phrase"])))
    left, top, w, h = crop_params(image.width, image.height, rng)
    box = (left, top, left + w, top + h)
    flip = rng.random() < 0.5
    picture = image.resize((size, size), Image.Resampling.BILINEAR, box=box)
    alphas = [Image.fromarray(m).resize((size, size), Image.Resampling.BILINEAR, box=box) for m in region_masks(profiles, regions, image.height)]
    if flip:
        picture = picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        alphas = [a.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for a in alphas]
    stacked = np.stack([np.asarray(a) for a in alphas] + [np.zeros((size, size), np.uint8)] * (VIEWS - len(alphas)))
    return np.asarray(picture), stacked


# ----------------------------------------------------------------------------- webdataset


def _webdataset_views(sample: dict, size: int) -> tuple[np.ndarray, np.ndarray]:
    return pil_views(sample["jpg"], sample["json"], np.asarray(sample["profiles.png"]), size, random.Random())


def webdataset_loader(shards: list[str], size: int, batch_images: int, workers: int):
    """open_clip's training pipeline (training/data.py, resampled shards) with our transforms."""
    import functools

    import webdataset as wds

    transform = functools.partial(_webdataset_views, size=size)  # a partial of a module function: it pickles into workers
    pipeline = wds.DataPipeline(
        wds.ResampledShards(shards),
        wds.tarfile_to_samples(handler=wds.warn_and_continue),
        wds.shuffle(200),
        wds.decode("pilrgb", handler=wds.warn_and_continue),
        wds.map(transform, handler=wds.warn_and_continue),
        wds.batched(batch_images, partial=False),
    )
    return torch.utils.data.DataLoader(
        pipeline, batch_size=None, num_workers=workers, persistent_workers=False,
        prefetch_factor=4 if workers else None, multiprocessing_context="forkserver" if workers else None,
    )


# ----------------------------------------------------------------------------- spdl


def _spdl_samples(shards: list[str]):
    """Endless raw samples (key -> {extension: bytes}) from SPDL's tar iterator, shards drawn at random."""
    import spdl.io

    rng = random.Random(0)
    while True:
        with open(rng.choice(shards), "rb") as stream:
            data = stream.read()
        current: dict = {}
        for name, payload in spdl.io.iter_tarfile(data):
            key, _, extension = name.partition(".")
            if current and current["__key__"] != key:
                yield current
                current = {}
            current["__key__"] = key
            current[extension] = bytes(payload)
        if current:
            yield current


def _spdl_views(sample: dict, size: int) -> tuple[np.ndarray, np.ndarray]:
    """FFmpeg decodes, crops, scales and flips the image in one filter graph; alphas with PIL."""
    import orjson
    import spdl.io
    from PIL import Image

    from fcdata import masks

    rng = random.Random()
    meta = orjson.loads(sample["json"])
    width, height = meta["width"], meta["height"]
    left, top, w, h = crop_params(width, height, rng)
    flip = rng.random() < 0.5
    graph = f"crop={w}:{h}:{left}:{top},scale={size}:{size}:flags=bilinear" + (",hflip" if flip else "") + ",format=rgb24"
    frames = spdl.io.decode_packets(spdl.io.demux_image(sample["jpg"]), filter_desc=graph)
    picture = spdl.io.to_numpy(spdl.io.convert_frames(frames))
    picture = picture.reshape(size, size, 3)
    regions = rng.sample(range(len(meta["regions"]["phrase"])), min(VIEWS, len(meta["regions"]["phrase"])))
    profiles = masks.decode_png(sample["profiles.png"])
    box = (left, top, left + w, top + h)
    alphas = [Image.fromarray(m).resize((size, size), Image.Resampling.BILINEAR, box=box) for m in region_masks(profiles, regions, height)]
    if flip:
        alphas = [a.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for a in alphas]
    stacked = np.stack([np.asarray(a) for a in alphas] + [np.zeros((size, size), np.uint8)] * (VIEWS - len(alphas)))
    return picture, stacked


def spdl_batches(shards: list[str], size: int, batch_images: int, threads: int):
    """SPDL's pipeline: source -> views (`threads` threads) -> batches of uint8 arrays."""
    from spdl.pipeline import PipelineBuilder

    def collate(items: list) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(np.stack([i[0] for i in items])), torch.from_numpy(np.stack([i[1] for i in items]))

    pipeline = (
        PipelineBuilder()
        .add_source(_spdl_samples(shards))
        .pipe(lambda sample: _spdl_views(sample, size), concurrency=threads)
        .aggregate(batch_images, drop_last=True)
        .pipe(collate)
        .add_sink(4)
        .build(num_threads=threads)
    )
    return pipeline


# ----------------------------------------------------------------------------- dali


def dali_pipeline(shards: list[str], size: int, batch_images: int, threads: int):
    """DALI's CPU pipeline over the tar shards: decode, masks as extra channels, one random
    resized crop and flip for all channels, uint8 out (as DALI's ImageNet examples, device cpu)."""
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=batch_images, num_threads=threads, device_id=None, exec_dynamic=True)
    def pipe():
        jpegs, profiles = fn.readers.webdataset(
            paths=shards, ext=["jpg", "profiles.png"], random_shuffle=True, initial_fill=200, name="reader",
        )
        images = fn.decoders.image(jpegs, device="cpu", output_type=types.RGB)  # H x W x 3
        rows = fn.decoders.image(profiles, device="cpu", output_type=types.GRAY)  # K x (H + W) x 1
        height = images.shape(dtype=types.INT32)[0]
        width = images.shape(dtype=types.INT32)[1]
        masks = []
        for k in range(VIEWS):  # the first regions: DALI has no per-sample random choice of rows here
            along_y = fn.slice(rows, fn.stack(k, 0), fn.stack(1, height), axes=[0, 1], out_of_bounds_policy="trim_to_shape")
            along_x = fn.slice(rows, fn.stack(k, height), fn.stack(1, width), axes=[0, 1], out_of_bounds_policy="trim_to_shape")
            along_y = fn.reshape(along_y, shape=fn.stack(height, 1, 1))
            along_x = fn.reshape(along_x, shape=fn.stack(1, width, 1))
            product = fn.cast(along_y, dtype=types.FLOAT) * fn.cast(along_x, dtype=types.FLOAT) / 255.0
            masks.append(fn.cast(product, dtype=types.UINT8))  # the outer product of the profiles: the mask
        stacked = fn.cat(images, *masks, axis=2)  # H x W x (3 + VIEWS)
        crops = fn.random_resized_crop(stacked, size=[size, size], random_area=[0.35, 1.0], random_aspect_ratio=[3 / 4, 4 / 3])
        return fn.flip(crops, horizontal=fn.random.coin_flip())

    pipeline = pipe()
    pipeline.build()
    return pipeline
