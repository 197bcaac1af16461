"""Streaming loader: shards -> uint8 batches in worker processes -> normalised on the device.

Each DataLoader worker plays a *role* (0..W-1 within its rank). A role's stream is a pure function
of (seed, epoch, rank, role): which shards it reads, how it shuffles them, and every random choice
made for its n-th sample (an RNG seeded with n, not a running state). Two consequences:
- the same seed gives the same batches, whatever the machine;
- a position (batches consumed, and per role how many samples it had emitted) is enough to resume
  exactly: each role re-reads its raw samples up to that point without decoding them.
The DataLoader takes batches from workers in turn, so batch i of an epoch comes from role
i mod W; on resume, worker w takes role (w + batches) mod W and the rotation continues unbroken.

Modes: `resample` (training) draws shards with replacement and never ends, so epochs are a fixed
number of batches; exactly-once (evaluation) splits a seeded permutation of the shards over
ranks x workers so every sample is read once, and the last batch of a worker may be short.

Pipeline of one role, as generator stages (what flows between them in comments):
    shard paths -> raw samples (dicts of bytes) -> shuffled raw samples -> [skip n on resume]
    -> ImageViews (uint8, decoded and augmented) -> RegionBatch (collated, tokenised)

With data.relation_ratio > 0 some views are relation views (fcdata.relation_views), and the
batch also carries their hard negatives: swapped-weight alphas (negative images of a view's
phrase) and negative captions of a view, each with the view it belongs to.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import hashlib
import itertools
import multiprocessing
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from fcdata import guard
from fcdata.augment import ImageViews, eval_view, train_views
from fcdata.captions import CaptionTokens, clean_caption
from fcdata.device_decode import pack_jpegs
from fcdata.errors import CountingHandler, ErrorHandler, UserError
from fcdata.options import LoaderOptions
from fcdata.relation_views import NEGATIVE_TEXTS
from fcdata.transforms import normalize_alphas, normalize_images


def resolve_shards(spec: str, split: str = "train") -> list[str]:
    """Shard paths from a folder (its `{split}-*.tar`), a file, a glob, a brace pattern
    (`train-{00000..00053}.tar`) or a comma-separated list of these."""
    import braceexpand

    paths: list[str] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        if os.path.isdir(part):
            paths += sorted(glob.glob(os.path.join(part, f"{split}-*.tar")))
            continue
        for expanded in braceexpand.braceexpand(part):
            matches = sorted(glob.glob(expanded)) if glob.has_magic(expanded) else [expanded]
            paths += matches
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise UserError(f"shard not found: {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    if not paths:
        raise UserError(f"no {split} shards in {spec!r}")
    return paths


@dataclass
class LoaderPosition:
    """Where a rank's stream is within an epoch; enough to resume it exactly."""

    epoch: int = 0
    batches: int = 0  # batches consumed this epoch
    emitted: list[int] = field(default_factory=list)  # per role: raw samples behind its last consumed batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batches": self.batches, "emitted": list(self.emitted)}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.batches, self.emitted = state["epoch"], state["batches"], list(state["emitted"])

    def advance(self, batch: "RegionBatch") -> None:
        """Record that `batch` was consumed."""
        self.emitted[batch.role] = batch.emitted
        self.batches += 1

    def next_epoch(self, roles: int) -> None:
        self.epoch, self.batches, self.emitted = self.epoch + 1, 0, [0] * roles


@dataclass
class RegionBatch:
    """One batch as workers emit it: uint8 pixels, token ids, ids. N images, B views."""

    images: torch.Tensor  # N x 3 x S x S uint8, one per image
    image_index: torch.Tensor  # B int64: the image each view is of
    alphas: torch.Tensor  # B x 1 x S x S uint8, 0..255
    input_ids: torch.Tensor  # B x T int64, T = the longest caption of this batch
    attention_mask: torch.Tensor  # B x T int64
    phrase_keys: torch.Tensor  # B int64, equal for captions equal ignoring case
    image_ids: torch.Tensor  # B int64
    region_ids: torch.Tensor  # B int64, -1 for a whole-image view, -2 for a relation view
    # Hard negatives of the relation views (empty without them): M swapped views, N captions.
    negative_alphas: torch.Tensor  # M x 1 x S x S uint8, over the image of their view
    negative_alpha_slot: torch.Tensor  # M int64: the view (0..B-1) whose phrase each is a negative image of
    negative_alpha_keys: torch.Tensor  # M int64: phrase key of the caption the image lists for the swapped pair, 0 if none
    negative_input_ids: torch.Tensor  # N x T int64 (T as input_ids)
    negative_attention_mask: torch.Tensor  # N x T int64
    negative_text_slot: torch.Tensor  # N int64: view * NEGATIVE_TEXTS + k, its place among its view's negative texts
    negative_text_keys: torch.Tensor  # N int64
    # decode = "device": the images' JPEGs (concatenated), N + 1 offsets, the crops (N x 4 float64,
    # stored pixels) and flips (N bool); `images` is then empty and made on the device (to_device).
    # The negatives' alphas come from the workers either way (their pixels are their view's image).
    jpeg_bytes: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.uint8))
    jpeg_offsets: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.int64))
    crop_boxes: torch.Tensor = field(default_factory=lambda: torch.empty((0, 4), dtype=torch.float64))
    flips: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.bool))
    role: int = 0  # the worker role that made it
    emitted: int = 0  # raw samples that role had emitted when it finished this batch
    skipped: dict[str, int] = field(default_factory=dict)  # samples skipped while making it, by error

    def __len__(self) -> int:
        return self.image_index.shape[0]

    def pin_memory(self) -> "RegionBatch":
        tensors = {name: getattr(self, name).pin_memory() for name in _TENSOR_FIELDS}
        return RegionBatch(**tensors, role=self.role, emitted=self.emitted, skipped=self.skipped)


_TENSOR_FIELDS = (
    "images", "image_index", "alphas", "input_ids", "attention_mask", "phrase_keys", "image_ids", "region_ids",
    "negative_alphas", "negative_alpha_slot", "negative_alpha_keys", "negative_input_ids", "negative_attention_mask",
    "negative_text_slot", "negative_text_keys", "jpeg_bytes", "jpeg_offsets", "crop_boxes", "flips",
)


def sample_seed(seed: int, epoch: int, slot: int, number: int) -> int:
    """The seed of the random choices made for one sample: distinct for every (seed, epoch,
    slot, sample number), and computed without a running state (see the module docstring)."""
    return (seed << 96) | (epoch << 64) | (slot << 40) | number


def phrase_key(phrase: str) -> int:
    """A stable 64-bit id of a caption as the text tower sees it (`clean_caption`: case, spacing,
    HTML entities, look-alike characters ignored)."""
    digest = hashlib.blake2b(clean_caption(phrase).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


# ----------------------------------------------------------------------------- stages of one role


def shard_order(shards: list[str], options: LoaderOptions, epoch: int, slot: int, slots: int) -> Iterator[str]:
    """Shards for one (rank, role) slot of `slots`: endless draws with replacement, or its share of
    a seeded permutation (exactly once over all slots)."""
    if options.resample:
        rng = np.random.default_rng([options.seed, epoch, slot, 2])
        while True:
            yield shards[int(rng.integers(len(shards)))]
    order = np.random.default_rng([options.seed, epoch]).permutation(len(shards))
    for index in order[slot::slots].tolist():
        yield shards[index]


def shuffle(samples: Iterator[dict], buffer_size: int, rng: np.random.Generator) -> Iterator[dict]:
    """raw samples -> the same samples in a locally shuffled order (a buffer of buffer_size)."""
    buffer: list[dict] = []
    for sample in samples:
        if len(buffer) < buffer_size:
            buffer.append(sample)
            continue
        index = int(rng.integers(buffer_size))
        buffer[index], sample = sample, buffer[index]
        yield sample
    order = rng.permutation(len(buffer))
    for index in order.tolist():
        yield buffer[index]


def view_maker(options: LoaderOptions, size: int, epoch: int, slot: int) -> Callable[[dict, int], ImageViews]:
    """(raw sample, its number) -> its views: training views with the sample's own RNG (see the
    module docstring), or, with train_augment off, the evaluation view of its first
    regions_per_image distinct regions (no randomness)."""
    count = options.regions_per_image
    if not options.train_augment:
        return lambda sample, number: eval_view(sample, size, max_regions=count).image_views()

    def views(sample: dict, number: int) -> ImageViews:
        return train_views(sample, count, size, options, random.Random(sample_seed(options.seed, epoch, slot, number)))

    return views


def _views(
    samples: Iterator[dict], first_index: int, make: Callable[[dict, int], ImageViews],
    handler: ErrorHandler, health: guard.StreamHealth | None,
) -> Iterator[tuple[int, ImageViews]]:
    """raw samples (the first numbered first_index) -> (sample number, views); corrupt samples
    go to `handler` (counted, reported with the batch) and are left out."""
    numbers = itertools.count(first_index + 1)  # every raw sample takes a number, failed ones too

    def views(sample: dict) -> tuple[int, ImageViews]:
        number = next(numbers)
        return number, make(sample, number)

    return guard.decoded(samples, views, handler, health)


def _batches(
    views: Iterator[tuple[int, ImageViews]], options: LoaderOptions, tokens: CaptionTokens, role: int, skipped: Counter,
) -> Iterator[RegionBatch]:
    """(number, views) -> RegionBatch of exactly batch_size views (the last may be short when
    the stream ends); an image whose views do not all fit contributes only those that do."""
    pending: list[ImageViews] = []
    room = options.batch_size
    for number, image_views in views:
        take = min(room, len(image_views.phrases))
        if take < len(image_views.phrases):
            negatives = image_views.negatives.first(take) if image_views.negatives is not None else None
            image_views = dataclasses.replace(
                image_views, alphas=image_views.alphas[:take], phrases=image_views.phrases[:take],
                region_ids=image_views.region_ids[:take], negatives=negatives,
            )
        pending.append(image_views)
        room -= take
        if room == 0:
            yield collate(pending, tokens, role, number, skipped)
            pending, room = [], options.batch_size
            skipped.clear()
    if pending:
        yield collate(pending, tokens, role, number, skipped)


def collate(images: list[ImageViews], tokens: CaptionTokens, role: int, emitted: int, skipped: Counter) -> RegionBatch:
    """The views of some images -> one RegionBatch. Pixels and alphas are written once, straight
    into the buffers the batch is sent in (shared memory in a worker: torch would otherwise copy
    them there when the batch is pickled)."""
    phrases = [p for views in images for p in views.phrases]
    negatives = _negatives(images)
    # Captions and negative captions through the one cache: the same ids, padded together.
    input_ids, attention_mask = tokens(phrases + negatives["texts"])
    view_count = len(phrases)
    counts = [len(views.phrases) for views in images]
    size = images[0].alphas.shape[-1]
    encoded = [views.encoded for views in images if views.encoded is not None]
    pixels = _batch_buffer((0 if encoded else len(images), size, size, 3))
    alphas = _batch_buffer((len(phrases), 1, size, size))
    pixel_rows, alpha_rows = pixels.numpy(), alphas.numpy()
    start = 0
    for index, views in enumerate(images):
        if not encoded:
            pixel_rows[index] = views.image
        alpha_rows[start : start + counts[index], 0] = views.alphas
        start += counts[index]
    return RegionBatch(
        **(_encoded_fields(encoded) if encoded else {}),
        # N x S x S x 3 in memory, seen as N x 3 x S x S (channels-last strides): no transposing
        # copy, and convolutions take channels-last input as it is.
        images=pixels.permute(0, 3, 1, 2),
        image_index=torch.from_numpy(np.repeat(np.arange(len(images)), counts)),
        alphas=alphas,
        input_ids=torch.from_numpy(input_ids[:view_count]),
        attention_mask=torch.from_numpy(attention_mask[:view_count]),
        phrase_keys=torch.tensor([phrase_key(p) for p in phrases], dtype=torch.int64),
        image_ids=torch.tensor(np.repeat([views.image_id for views in images], counts), dtype=torch.int64),
        region_ids=torch.tensor([r for views in images for r in views.region_ids], dtype=torch.int64),
        negative_alphas=negatives["alphas"],
        negative_alpha_slot=torch.tensor(negatives["alpha_slot"], dtype=torch.int64),
        negative_alpha_keys=torch.tensor([phrase_key(p) if p else 0 for p in negatives["alpha_phrases"]], dtype=torch.int64),
        negative_input_ids=torch.from_numpy(input_ids[view_count:]),
        negative_attention_mask=torch.from_numpy(attention_mask[view_count:]),
        negative_text_slot=torch.tensor(negatives["text_slot"], dtype=torch.int64),
        negative_text_keys=torch.tensor([phrase_key(t) for t in negatives["texts"]], dtype=torch.int64),
        role=role,
        emitted=emitted,
        skipped=dict(skipped),
    )


def _encoded_fields(encoded: list) -> dict:
    """RegionBatch's decode = "device" fields for the images' EncodedCrops."""
    jpeg_bytes, jpeg_offsets = pack_jpegs([e.jpeg for e in encoded])
    return dict(
        jpeg_bytes=jpeg_bytes, jpeg_offsets=jpeg_offsets, flips=torch.tensor([e.flip for e in encoded]),
        crop_boxes=torch.from_numpy(np.stack([e.box for e in encoded]).astype(np.float64)),
    )


def _batch_buffer(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised uint8 tensor, in shared memory when made in a DataLoader worker (as torch's
    default_collate allocates its batches)."""
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=torch.uint8)
    storage = torch.UntypedStorage._new_shared(int(np.prod(shape)))
    return torch.empty(0, dtype=torch.uint8).set_(storage).view(shape)


def _negatives(images: list[ImageViews]) -> dict:
    """The images' hard negatives, their views numbered over the batch (see RegionBatch); the
    alphas (M x 1 x S x S) written straight into a batch buffer, as collate's own."""
    size = images[0].alphas.shape[-1]  # images[0].image is None with decode = "device"
    found_alphas, alpha_slot, alpha_phrases, texts, text_slot = [], [], [], [], []
    first = 0
    for views in images:
        found = views.negatives
        if found is not None:
            found_alphas.append(found.alphas)
            alpha_slot += [first + v for v in found.alpha_view]
            alpha_phrases += found.alpha_phrases
            texts += found.texts
            # k-th negative text of its view: the views' texts come in view order
            seen: Counter = Counter()
            for v in found.text_view:
                text_slot.append((first + v) * NEGATIVE_TEXTS + seen[v])
                seen[v] += 1
        first += len(views.phrases)
    alphas = _batch_buffer((len(alpha_slot), 1, size, size))
    if alpha_slot:
        np.concatenate(found_alphas, out=alphas.numpy()[:, 0])
    return {
        "alphas": alphas, "alpha_slot": alpha_slot, "alpha_phrases": alpha_phrases,
        "texts": texts, "text_slot": text_slot,
    }


class RegionStream(torch.utils.data.IterableDataset):
    """The batches of one rank for one epoch (see the module docstring)."""

    def __init__(
        self, shards: list[str], options: LoaderOptions, tokenizer, image_size: int,
        rank: int = 0, world: int = 1, position: LoaderPosition | None = None,
    ):
        self.shards, self.options, self.tokenizer, self.image_size = shards, options, tokenizer, image_size
        self.rank, self.world = rank, world
        self.roles = max(1, options.workers)
        self.position = position or LoaderPosition(emitted=[0] * self.roles)
        if len(self.position.emitted) != self.roles:
            raise UserError(
                f"the data position was saved with {len(self.position.emitted)} loader workers; "
                f"resume with data.workers = {len(self.position.emitted)}"
            )

    def __iter__(self) -> Iterator[RegionBatch | StreamFailure]:
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        role = (worker + self.position.batches) % self.roles
        slot = self.rank * self.roles + role  # unique over all ranks and roles
        epoch, options = self.position.epoch, self.options
        already = self.position.emitted[role]
        handler = CountingHandler(f"loader rank {self.rank} role {role}")
        # Only an endless stream needs a watchdog: an exactly-once one ends by itself.
        health = guard.StreamHealth(self.shards, handler) if options.resample else None
        # shard paths -> raw samples -> shuffled raw samples
        paths = shard_order(self.shards, options, epoch, slot, self.world * self.roles)
        samples = shuffle(
            guard.read_raw(paths, handler, health), options.shuffle_buffer, np.random.default_rng([options.seed, epoch, slot, 0])
        )
        make = view_maker(options, self.image_size, epoch, slot)
        made = 0
        try:
            for _ in range(already):  # resume: consumed samples are read again but not decoded
                if next(samples, None) is None:
                    return
            # -> (number, ImageViews) -> RegionBatch; handler.counts are the skips since the last batch
            views = _views(samples, already, make, handler, health)
            tokens = CaptionTokens(self.tokenizer, options.max_text_tokens)  # one per role: ids cached per caption
            for batch in _batches(views, options, tokens, role, handler.counts):
                made += 1
                yield batch
        except UserError as exc:
            # Raised in a worker it would reach the trainer wrapped in a traceback: pass it as data.
            yield StreamFailure(str(exc), fatal=True)
            return
        if not made and handler.counts:
            yield StreamFailure(
                f"loader rank {self.rank} role {role}: no usable sample in its shards "
                f"(skipped {handler.summary()}; first: {handler.first})", fatal=False,
            )


@dataclass
class StreamFailure:
    """What a stream yields instead of a batch when it cannot make one. Fatal: it never will (the
    Prefetcher raises the message as a UserError). Not fatal: an exactly-once role whose share of
    the shards gave nothing (the Prefetcher keeps it in `problems`; other roles may be fine)."""

    message: str
    fatal: bool


def make_loader(stream: RegionStream) -> torch.utils.data.DataLoader:
    """A DataLoader over the stream: batches are made in the workers (batch_size=None).

    Workers come from a fork server: as clean as spawned processes (never forked from a process
    running CUDA or threads) but started faster, and unlike spawned ones (torch 2.13) they do not
    abort when an iterator is abandoned mid-stream, as the trainer does at every epoch's end.
    """
    workers = stream.options.workers
    context = None
    if workers:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["fcdata.loader"])
    return torch.utils.data.DataLoader(
        stream,
        batch_size=None,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
        multiprocessing_context=context,
    )


# ----------------------------------------------------------------------------- on the device


@dataclass
class DeviceBatch:
    """A batch on the training device, normalised: B views."""

    pixel_values: torch.Tensor  # B x 3 x S x S float32, CLIP-normalised (images gathered per view)
    alpha: torch.Tensor  # B x 1 x S x S float32, (a - 0.5) / 0.26
    input_ids: torch.Tensor  # B x T int64
    attention_mask: torch.Tensor  # B x T int64
    phrase_keys: torch.Tensor  # B int64
    image_ids: torch.Tensor  # B int64
    region_ids: torch.Tensor  # B int64
    # The relation views' hard negatives (RegionBatch): M swapped views, N captions.
    negative_pixel_values: torch.Tensor  # M x 3 x S x S float32, the image of each one's view
    negative_alpha: torch.Tensor  # M x 1 x S x S float32
    negative_alpha_slot: torch.Tensor  # M int64
    negative_alpha_keys: torch.Tensor  # M int64
    negative_input_ids: torch.Tensor  # N x T int64
    negative_attention_mask: torch.Tensor  # N x T int64
    negative_text_slot: torch.Tensor  # N int64
    negative_text_keys: torch.Tensor  # N int64
    source: RegionBatch  # the host batch (role, emitted, skipped; tensors on the host)

    def __len__(self) -> int:
        return self.input_ids.shape[0]


_DEVICE_FIELDS = tuple(f.name for f in dataclasses.fields(DeviceBatch) if f.name != "source")


def to_device(batch: RegionBatch, device: torch.device) -> DeviceBatch:
    move = functools.partial(torch.Tensor.to, device=device, non_blocking=True)
    if batch.jpeg_offsets.numel():  # decode = "device": the images are made here
        from fcdata.device_decode import device_images

        pixels = device_images(batch.jpeg_bytes, batch.jpeg_offsets, batch.crop_boxes, batch.flips, batch.alphas.shape[-1], device)
    else:
        pixels = move(batch.images)
    images = normalize_images(pixels)
    image_index = move(batch.image_index)
    negative_alpha_slot = move(batch.negative_alpha_slot)
    return DeviceBatch(
        pixel_values=images[image_index],
        alpha=normalize_alphas(move(batch.alphas)),
        input_ids=move(batch.input_ids),
        attention_mask=move(batch.attention_mask),
        phrase_keys=move(batch.phrase_keys),
        image_ids=move(batch.image_ids),
        region_ids=move(batch.region_ids),
        negative_pixel_values=images[image_index[negative_alpha_slot]],
        negative_alpha=normalize_alphas(move(batch.negative_alphas)),
        negative_alpha_slot=negative_alpha_slot,
        negative_alpha_keys=move(batch.negative_alpha_keys),
        negative_input_ids=move(batch.negative_input_ids),
        negative_attention_mask=move(batch.negative_attention_mask),
        negative_text_slot=move(batch.negative_text_slot),
        negative_text_keys=move(batch.negative_text_keys),
        source=batch,
    )


class Prefetcher:
    """Batches on the device, one ahead: on CUDA the copy and normalisation of batch i+1 run on a
    side stream while batch i trains (timm's prefetcher); on CPU the same API without streams.
    `wait_seconds` accumulates the time the consumer waited for data; `problems` holds the
    messages of non-fatal StreamFailures (a fatal one is raised as a UserError)."""

    def __init__(self, batches, device: torch.device):
        self.batches, self.device = batches, device
        self.wait_seconds = 0.0
        self.problems: list[str] = []

    def __iter__(self) -> Iterator[DeviceBatch]:
        iterator = iter(self.batches)
        if self.device.type != "cuda":
            while True:
                started = time.perf_counter()
                batch = self._next(iterator)
                self.wait_seconds += time.perf_counter() - started
                if batch is None:
                    return
                yield to_device(batch, self.device)
        stream = torch.cuda.Stream(self.device)
        upcoming = self._load(iterator, stream)
        while upcoming is not None:
            started = time.perf_counter()
            torch.cuda.current_stream(self.device).wait_stream(stream)
            current = upcoming
            for name in _DEVICE_FIELDS:
                getattr(current, name).record_stream(torch.cuda.current_stream(self.device))
            upcoming = self._load(iterator, stream)
            self.wait_seconds += time.perf_counter() - started
            yield current

    def _next(self, iterator) -> RegionBatch | None:
        """The next batch; StreamFailures are raised (fatal) or noted (not) on the way."""
        while True:
            batch = next(iterator, None)
            if not isinstance(batch, StreamFailure):
                return batch
            if batch.fatal:
                raise UserError(batch.message)
            self.problems.append(batch.message)

    def _load(self, iterator, stream) -> DeviceBatch | None:
        batch = self._next(iterator)
        if batch is None:
            return None
        with torch.cuda.stream(stream):
            return to_device(batch, self.device)


def count_samples(shards: list[str]) -> int:
    """Samples in the shards, from sizes.json beside them where present, else by reading
    (an unreadable shard counts as empty; the loader reports it when it reads it)."""
    import json

    total = 0
    sizes_cache: dict[str, dict] = {}
    for shard in shards:
        folder = str(Path(shard).parent)
        if folder not in sizes_cache:
            sizes_path = Path(folder) / "sizes.json"
            try:
                sizes_cache[folder] = json.loads(sizes_path.read_text()) if sizes_path.exists() else {}
            except (OSError, ValueError):
                sizes_cache[folder] = {}
        size = sizes_cache[folder].get(Path(shard).name)
        if not isinstance(size, int):
            size = sum(1 for _ in guard.read_raw([shard], lambda exc: True))
        total += size
    return total
