"""Options of the data commands (shard, synth). Standard library only, so the CLI can show their defaults
without importing numpy, numba or pyarrow."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from fcdata import reasons
from fcdata.captions import CONTEXT_LENGTH
from fcdata.errors import UserError


@dataclass(frozen=True)
class ShardOptions:
    image_size: int = 256  # shorter side of stored images, px (224 training + crop headroom); never upscaled
    max_long_side: int = 1024  # cap on the longer side, px, for panoramas
    jpeg_quality: int = 90  # quality of the re-encoded JPEGs
    mask: str = "binary"  # "binary" (0/255, 1-bit profiles) or "soft" (feathered edges, 8-bit); both separable-v1
    feather_px: float = 4.0  # soft masks: width of the ramp across each box edge, stored px
    min_box_side_px: float = 4.0  # drop regions with a side shorter than this, stored px
    duplicate_iou: float = 0.7  # same phrase (ignoring case) and IoU above this: a duplicate
    max_phrase_chars: int = 200  # longer phrases are cut at a word boundary
    object_min_iou: float = 0.5  # attach the best-overlapping VG object only from this IoU on
    coco_instances: tuple[str, ...] = ()  # COCO instances JSON files: real masks for COCO photos
    coco_min_iou: float = 0.5  # a region takes the COCO instance whose box it overlaps best, from this IoU on
    relations: bool = True  # store relationships.json's relations in each sample, where the file exists
    val_fraction: float = 0.05  # share of images in the val split (by a hash of the image id)
    shard_samples: int = 2000  # images per shard (~70 MB at the defaults)
    skip_image_ids: tuple[int, ...] = reasons.KNOWN_CORRUPT_IMAGE_IDS  # never read these ids
    max_source_pixels: int = 100_000_000  # bigger sources are skipped as decompression bombs
    workers: int = 0  # worker processes, 0 = all available cores (does not change the output)
    strict: bool = False  # re-raise unexpected per-image errors instead of counting them (tests)

    def __post_init__(self) -> None:
        checks = [
            (self.image_size >= 16, "image_size must be >= 16"),
            (self.max_long_side >= self.image_size, "max_long_side must be >= image_size"),
            (1 <= self.jpeg_quality <= 100, "jpeg_quality must be in 1..100"),
            (self.mask in ("binary", "soft"), "mask must be 'binary' or 'soft'"),
            (self.feather_px >= 1.0, "feather_px must be >= 1"),
            (self.min_box_side_px >= 0.0, "min_box_side_px must be >= 0"),
            (0.0 < self.duplicate_iou <= 1.0, "duplicate_iou must be in (0, 1]"),
            (self.max_phrase_chars >= 1, "max_phrase_chars must be >= 1"),
            (0.0 <= self.object_min_iou <= 1.0, "object_min_iou must be in [0, 1]"),
            (0.0 < self.coco_min_iou <= 1.0, "coco_min_iou must be in (0, 1]"),
            (0.0 <= self.val_fraction < 1.0, "val_fraction must be in [0, 1)"),
            (self.shard_samples >= 1, "shard_samples must be >= 1"),
            (self.workers >= 0, "workers must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)

    def output_affecting(self) -> dict:
        """The options that change the bytes written (everything but how the work is run)."""
        fields = dataclasses.asdict(self)
        for name in ("workers", "strict"):
            fields.pop(name)
        fields["skip_image_ids"] = sorted(fields["skip_image_ids"])
        # Box-only jobs record no COCO fields, so outputs made before they existed still resume.
        if self.coco_instances:
            fields["coco_instances"] = list(self.coco_instances)
        else:
            del fields["coco_instances"], fields["coco_min_iou"]
        return fields

    def resolved_workers(self) -> int:
        """`workers`, at most the cores available (0: all of them): sharding is CPU-bound, so more
        processes than cores only cost memory (and thousands exhaust the process table)."""
        cores = len(os.sched_getaffinity(0))
        return min(self.workers, cores) if self.workers else cores


VERSIONS = ("1.0", "1.2", "1.4")
MIN_IMAGES_WITH_QUIRKS = 30  # 20 images carry a quirk; the rest stay clean
MIN_LONG_SIDE_PX = 128  # below this the 3-6 objects and their part regions no longer fit
MAX_LONG_SIDE_PX = 4096
MAX_REGIONS_PER_IMAGE = 200  # VG averages 50; the phrase pools hold 400+ per image


@dataclass(frozen=True)
class SynthOptions:
    num_images: int = 100  # images listed in image_data.json
    seed: int = 0  # same seed and options, byte-identical files
    version: str = "1.4"  # VG release whose field names are written: 1.0, 1.2 or 1.4
    quirks: bool = False  # inject VG's known defects, a fixed number of each (needs 30 images)
    regions_per_image: int = 0  # pad images with extra regions up to this many; 0: one per object
    workers: int = 1  # processes; 0 = all cores available; the output does not depend on it
    long_side_px: tuple[int, int] = (500, 800)  # longer side range, inclusive; tests shrink it

    def __post_init__(self) -> None:
        if self.num_images < 1:
            raise UserError(f"the number of images must be at least 1, got {self.num_images}")
        if self.seed < 0:
            raise UserError(f"seed must be >= 0, got {self.seed}")
        if self.version not in VERSIONS:
            raise UserError(f"version must be one of {', '.join(VERSIONS)}, got {self.version!r}")
        if self.quirks and self.num_images < MIN_IMAGES_WITH_QUIRKS:
            raise UserError(
                f"quirks need at least {MIN_IMAGES_WITH_QUIRKS} images, got {self.num_images}"
            )
        if not 0 <= self.regions_per_image <= MAX_REGIONS_PER_IMAGE:
            raise UserError(
                f"regions_per_image must be in 0..{MAX_REGIONS_PER_IMAGE}, "
                f"got {self.regions_per_image}"
            )
        if self.workers < 0:
            raise UserError(f"workers must be >= 0, got {self.workers}")
        low, high = self.long_side_px
        if not MIN_LONG_SIDE_PX <= low <= high <= MAX_LONG_SIDE_PX:
            raise UserError(
                f"long_side_px must satisfy {MIN_LONG_SIDE_PX} <= low <= high <= "
                f"{MAX_LONG_SIDE_PX}, got {self.long_side_px}"
            )

    def output_affecting(self) -> dict:
        """The options that change the bytes written (all but `workers`), as saved in the report."""
        fields = dataclasses.asdict(self)
        del fields["workers"]
        return fields


@dataclass(frozen=True)
class LoaderOptions:
    shards: str = ""  # shard folder, file, brace pattern (train-{00000..00053}.tar) or comma list
    split: str = "train"  # which split's shards to take from a shard folder
    batch_size: int = 256  # region views per batch and rank (images per batch x regions_per_image)
    regions_per_image: int = 2  # views per image: same-image regions become each other's negatives
    workers: int = 4  # DataLoader worker processes (0 = in the calling process)
    resample: bool = True  # endless stream drawing shards with replacement; False: each sample once per epoch
    shuffle_buffer: int = 1000  # images held for shuffling (per worker)
    full_image_ratio: float = 0.1  # chance that an image contributes a whole-image view
    full_image_min_cover: float = 0.8  # a region this large stands in for the missing image caption
    min_visible: float = 0.6  # share of each chosen region a training crop must keep
    crop_scale: tuple[float, float] = (0.35, 1.0)  # crop area as a share of the image
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # crop aspect ratio range
    flip: bool = True  # mirror half the images (and swap "left"/"right" in their phrases)
    train_augment: bool = True  # False: letterbox, no randomness (evaluation view)
    decode: str = "cpu"  # "cpu": workers decode and crop; "device": they send JPEG bytes + crops, decoded on the GPU (needs torchvision)
    max_text_tokens: int = CONTEXT_LENGTH  # captions are cut to this many tokens
    # Share of the views of images with relations that show a relation instead of a region (the
    # graded alpha of its subject and object; fcdata.relation_views), with its hard negatives.
    relation_ratio: float = 0.0
    relation_weights: tuple[float, float, float] = (1.0, 0.5, 0.0)  # a relation view's alpha: subject, object, background
    seed: int = 0  # same seed, same stream of batches (fc train: run.seed unless data.seed is given)

    def __post_init__(self) -> None:
        checks = [
            (self.batch_size >= 1, "data.batch_size must be >= 1"),
            (self.regions_per_image >= 1, "data.regions_per_image must be >= 1"),
            (self.batch_size % self.regions_per_image == 0, "data.batch_size must be a multiple of data.regions_per_image"),
            (self.workers >= 0, "data.workers must be >= 0"),
            (self.shuffle_buffer >= 1, "data.shuffle_buffer must be >= 1"),
            (0.0 <= self.full_image_ratio <= 1.0, "data.full_image_ratio must be in [0, 1]"),
            (0.0 < self.min_visible <= 1.0, "data.min_visible must be in (0, 1]"),
            (0.0 < self.crop_scale[0] <= self.crop_scale[1] <= 1.0, "data.crop_scale must satisfy 0 < low <= high <= 1"),
            (0.0 < self.crop_ratio[0] <= self.crop_ratio[1], "data.crop_ratio must satisfy 0 < low <= high"),
            (self.decode in ("cpu", "device"), "data.decode must be 'cpu' or 'device'"),
            (0.0 <= self.relation_ratio <= 1.0, "data.relation_ratio must be in [0, 1]"),
            # The subject must be the brightest: a swapped view is then a different alpha (the hard negative).
            (
                len(self.relation_weights) == 3
                and 0.0 <= self.relation_weights[2] <= self.relation_weights[1] < self.relation_weights[0] <= 1.0,
                "data.relation_weights (subject, object, background) must satisfy 0 <= background <= object < subject <= 1",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)

    @property
    def images_per_batch(self) -> int:
        return self.batch_size // self.regions_per_image


@dataclass(frozen=True)
class MaskOptions:
    batch_images: int = 8  # images per image-encoder pass (does not change the output)
    min_predicted_iou: float = 0.7  # below this predicted IoU the region keeps its box
    max_outside_box: float = 0.1  # above this share of mask pixels outside the (grown) box: box
    box_margin: float = 0.05  # the box is grown by this share of its width / height on each side
    device: str = "auto"  # auto, cpu, cuda, cuda:N

    def __post_init__(self) -> None:
        checks = [
            (self.batch_images >= 1, "--batch-images must be >= 1"),
            (0.0 <= self.min_predicted_iou <= 1.0, "--min-predicted-iou must be in [0, 1]"),
            (0.0 <= self.max_outside_box <= 1.0, "--max-outside-box must be in [0, 1]"),
            (self.box_margin >= 0.0, "--box-margin must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)

    def output_affecting(self) -> dict:
        fields = dataclasses.asdict(self)
        del fields["batch_images"], fields["device"]
        return fields
