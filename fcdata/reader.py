"""Reading shard samples: (RGB uint8 H x W x 3, masks uint8 K x H x W, phrases, metadata).

`decode_sample` works on the dict a WebDataset pipeline yields (bytes keyed by extension);
`iter_shard` reads a shard with the standard library alone, grouping members by key.
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from fcdata import keys, masks, reasons, segmasks
from fcdata.errors import ReadError


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


def iter_shard(path: str | Path) -> Iterator[dict[str, bytes]]:
    """Raw samples of one tar shard: {"__key__": key, extension: bytes, ...}, in file order.

    Plain ustar archives (what `fc shard` writes) are walked header by header here, ~8x faster than
    tarfile; archives with pax or GNU long-name headers are read with tarfile instead. A file that
    is not a tar raises ReadError; one cut short yields the samples before the cut, then raises it.
    """
    try:
        with open(path, "rb") as stream:
            data = stream.read()
    except OSError as exc:
        raise ReadError(reasons.READ_UNREADABLE_SHARD, str(path), exc.strerror or str(exc)) from None
    walked = _ustar_members(data)
    members, cut = walked if walked is not None else _tarfile_members(data, str(path))
    current: dict[str, bytes] = {}
    for name, payload in members:
        key, _, extension = name.rpartition("/")[2].partition(".")
        if current and current[keys.KEY] != key:
            yield current
            current = {}
        current[keys.KEY] = key
        current[extension] = payload
    if cut:
        # The last sample may have lost members to the cut: it is dropped with the shard's tail.
        raise ReadError(reasons.READ_TRUNCATED_SHARD, str(path), cut)
    if current:
        yield current


def _ustar_members(data: bytes) -> tuple[list[tuple[str, bytes]], str] | None:
    """(name, data) of the regular files and how the archive was cut short ("" if it was not),
    or None if a header needs tarfile (pax, GNU, a bad checksum)."""
    members = []
    view = memoryview(data)
    offset = 0
    while offset + 512 <= len(data):
        header = data[offset : offset + 512]
        if header == _EMPTY_BLOCK:
            break
        if header[257:262] != b"ustar" or header[156:157] not in (b"0", b"\0", b"5"):
            return None
        try:
            size = int(header[124:136].rstrip(b"\0 ") or b"0", 8)
            checksum = int(header[148:156].rstrip(b"\0 "), 8)
        except ValueError:
            return None
        if checksum != sum(header[:148]) + 256 + sum(header[156:]):  # the checksum field counts as spaces
            return None
        start = offset + 512
        if start + size > len(data):
            return members, f"a member of {size} bytes runs past the end of the file"
        if header[156:157] != b"5":
            name = header[:100].rstrip(b"\0").decode()
            prefix = header[345:500].rstrip(b"\0").decode()
            members.append((f"{prefix}/{name}" if prefix else name, bytes(view[start : start + size])))
        offset = start + size + (-size % 512)
    else:  # no end-of-archive block: the file stops at (or inside) a header
        if members or offset < len(data):
            return members, "the file ends without the end-of-archive block"
    return members, ""


def _tarfile_members(data: bytes, path: str) -> tuple[list[tuple[str, bytes]], str]:
    """(name, data) of the regular files before any fault, and the fault ("" if none)."""
    members: list[tuple[str, bytes]] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
            for member in archive:
                if member.isfile():
                    payload = archive.extractfile(member).read()
                    if len(payload) != member.size:
                        return members, f"a member of {member.size} bytes runs past the end of the file"
                    members.append((member.name, payload))
    except tarfile.ReadError as exc:
        if not members and not data.strip(b"\0"):
            return members, ""  # only zero blocks (or nothing): a tar without members
        if not members:
            raise ReadError(reasons.READ_UNREADABLE_SHARD, path, f"not a tar archive: {exc}") from None
        return members, str(exc)
    except (EOFError, tarfile.TarError) as exc:
        return members, f"{type(exc).__name__}: {exc}"
    return members, ""


_EMPTY_BLOCK = bytes(512)


def read_shard(path: str | Path) -> Iterator[RegionSample]:
    for sample in iter_shard(path):
        yield decode_sample(sample)
