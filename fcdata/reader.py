"""Reading shard samples: (RGB uint8 H x W x 3, masks uint8 K x H x W, phrases, metadata).

`decode_sample` works on the dict a WebDataset pipeline yields (bytes keyed by extension);
`read_shard` decodes every sample of one shard, read by fcdata.tarformat.iter_shard.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from fcdata import keys, masks, segmasks
from fcdata.tarformat import iter_shard


@dataclass
class RegionSample:
    key: str
    image: np.ndarray  # H x W x 3 uint8 RGB
    masks: np.ndarray  # K x H x W uint8, 0..255 (binary masks hold 0/255)
    phrases: list[str]  # K
    meta: dict  # the sample's JSON: image_id, sizes, regions (ids, boxes, objects), mask layout

    @property
    def mask_sources(self) -> list[str]:
        """Per region where its mask came from (fcdata.segmasks.SOURCES); "box" for box layouts."""
        return segmasks.region_sources(self.meta["mask"], len(self.meta["regions"]["region_id"]))

    @property
    def boxes(self) -> np.ndarray:
        """K x 4 int32 (x0, y0, x1, y1): half-open pixel ranges of the stored image."""
        return np.asarray(self.meta["regions"]["box"], np.int32).reshape(-1, 4)

    @property
    def region_ids(self) -> list[int]:
        return self.meta["regions"]["region_id"]


def decode_meta(sample: Mapping[str, bytes]) -> dict:
    return json.loads(sample[keys.META])


def decode_image(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def decode_masks(
    sample: Mapping[str, bytes], meta: dict, regions: Sequence[int] | None = None
) -> np.ndarray:
    """The masks of the chosen region indices (all if None) as k x H x W uint8."""
    count = len(meta["regions"]["region_id"])
    chosen = np.arange(count) if regions is None else np.asarray(regions, np.int64)
    if chosen.size and (chosen.min() < 0 or chosen.max() >= count):
        raise IndexError(f"region index out of range for {count} regions: {chosen.tolist()}")
    layout = meta["mask"]["layout"]
    if layout == keys.MASK_LAYOUT_SEPARABLE:
        rows, cols = masks.decode_profiles(sample[keys.MASK_PROFILES], meta["height"])
        return masks.profiles_to_masks(rows, cols, chosen)
    if layout == keys.MASK_LAYOUT_RUNS:
        rows, cols = masks.decode_profiles(sample[keys.MASK_PROFILES], meta["height"], chosen.tolist())
        mask_meta = meta["mask"]
        return segmasks.region_masks(sample[segmasks.member_name(mask_meta)], rows, cols, mask_meta, chosen.tolist())
    raise ValueError(f"unknown mask layout {layout!r}")


def decode_sample(sample: Mapping[str, bytes], regions: Sequence[int] | None = None) -> RegionSample:
    meta = decode_meta(sample)
    chosen = range(len(meta["regions"]["phrase"])) if regions is None else regions
    return RegionSample(
        key=sample[keys.KEY] if keys.KEY in sample else str(meta["image_id"]),
        image=decode_image(sample[keys.IMAGE]),
        masks=decode_masks(sample, meta, regions),
        phrases=[meta["regions"]["phrase"][k] for k in chosen],
        meta=meta,
    )


def read_shard(path: str | Path) -> Iterator[RegionSample]:
    for sample in iter_shard(path):
        yield decode_sample(sample)
