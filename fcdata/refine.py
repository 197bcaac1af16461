"""`fc masks`: SAM / SAM2 masks for the regions of existing shards, written as new shards.

Reads IN/*.tar (both splits), prompts the model with each region's box (fcdata.sam: one
image-encoder pass per batch of `batch_images`, all boxes of an image through the prompt decoder),
and writes OUT/<same name>.tar with the same samples, the same members in the same order and
byte-identical except the JSON's "mask" entry and the mask member of layout runs-v1
(fcdata.segmasks): `profiles.png` (every region's box), the JPEG and every other JSON field stay.

A predicted mask is kept (source "sam") when all of these hold, else the region keeps its box:
- SAM's predicted IoU >= MaskOptions.min_predicted_iou (default 0.7; SAM's own automatic
  generator keeps masks from 0.88, a box prompt already says where the object is);
- at most MaskOptions.max_outside_box (default 0.1) of its pixels lie outside the region's box
  grown by MaskOptions.box_margin (default 0.05 of each side): a mask spilling out of its box
  segmented something else;
- it is not empty.
Regions that already hold a COCO mask keep it (an annotation beats a prediction) and are not
prompted. Counts per reason are in OUT/masks_summary.json.

Resumable like `fc shard`: each output shard is written under a temporary name and renamed, then
its summary part (OUT/.masks/<shard>.json); a shard counts as done when its part exists. Running
the same command again finishes the rest; a finished job does nothing. The output is a function of
the input shards, the model and the options; `batch_images` may be changed between runs (each
image's prompts are decoded on their own; only the image encoder sees the batch, where a batched
kernel can differ in the last bits of a logit, so a pixel exactly at the threshold may flip).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Iterator, Protocol

import numpy as np

from fcdata import keys, reader, segmasks, tarformat
from fcdata.errors import UserError
from fcdata.options import MaskOptions
from fcdata.outputs import atomic_output, write_json_atomically
from fcdata.tarformat import TarShardWriter

PARTS_DIR = ".masks"
CONFIG_FILE = "masks_config.json"
SUMMARY_FILE = "masks_summary.json"

KEPT = "regions_sam"
LOW_IOU = "box_low_predicted_iou"
OUTSIDE = "box_mask_outside_box"
EMPTY = "box_empty_mask"
COCO_KEPT = "regions_coco_kept"
COUNTS = (KEPT, LOW_IOU, OUTSIDE, EMPTY, COCO_KEPT)


class MaskProgress(Protocol):
    def start(self, images: int, shards: int, shards_done: int) -> None: ...

    def advance(self, images: int, skipped: int, busy_seconds: float) -> None: ...

    def shard_done(self) -> None: ...

    def note(self, message: str) -> None: ...


def accept(mask: np.ndarray, iou: float, box, options: MaskOptions) -> str:
    """KEPT or the reason the region keeps its box (see the module docstring)."""
    total = int(mask.sum())
    if total == 0:
        return EMPTY
    if iou < options.min_predicted_iou:
        return LOW_IOU
    x0, y0, x1, y1 = box
    grow_x, grow_y = options.box_margin * (x1 - x0), options.box_margin * (y1 - y0)
    left, right = max(0, int(np.floor(x0 - grow_x))), int(np.ceil(x1 + grow_x))
    top, bottom = max(0, int(np.floor(y0 - grow_y))), int(np.ceil(y1 + grow_y))
    inside = int(mask[top:bottom, left:right].sum())
    return OUTSIDE if (total - inside) > options.max_outside_box * total else KEPT


def refine_sample(raw: dict, prediction, prompted: list[int], options: MaskOptions, counts: Counter) -> dict[str, bytes]:
    """One raw sample and the predictions for its `prompted` regions -> the output sample."""
    meta = reader.decode_meta(raw)
    regions = len(meta["regions"]["region_id"])
    mask_meta = meta["mask"]
    existing = reader.decode_masks(raw, meta) if mask_meta["layout"] == keys.MASK_LAYOUT_RUNS else None
    sources = segmasks.region_sources(mask_meta, regions)
    full: list[np.ndarray | None] = [None] * regions
    out_sources = [segmasks.SOURCE_BOX] * regions
    shared = [-1] * regions
    for k in range(regions):
        if sources[k] != segmasks.SOURCE_BOX:  # an existing real mask (COCO) stays, still shared
            kept = existing[k] if mask_meta["graded"] else existing[k] > 0
            full[k], out_sources[k], shared[k] = kept, sources[k], mask_meta["mask_of"][k]
            counts[COCO_KEPT] += sources[k] == segmasks.SOURCE_COCO
    for m, k in enumerate(prompted):
        verdict = accept(prediction.masks[m], float(prediction.iou[m]), meta["regions"]["box"][k], options)
        counts[verdict] += 1
        if verdict == KEPT:
            full[k], out_sources[k] = prediction.masks[m], segmasks.SOURCE_SAM
    members, fields = segmasks.encode_masks(full, out_sources, shared)
    layout = keys.MASK_LAYOUT_RUNS if members else keys.MASK_LAYOUT_SEPARABLE
    meta["mask"] = {"layout": layout, **fields}
    out: dict[str, bytes] = {}
    for name, data in raw.items():
        if name in (keys.KEY, keys.MASK_RUNS, keys.MASK_CROPS):
            continue
        out[name] = json.dumps(meta, separators=(",", ":"), ensure_ascii=False).encode() if name == keys.META else data
        if name == keys.MASK_PROFILES:
            out.update(members)  # where fc shard puts the mask member: right after the profiles
    return out


def prompts_of(meta: dict) -> list[int]:
    """The regions SAM is asked about: those whose mask is still their box."""
    sources = segmasks.region_sources(meta["mask"], len(meta["regions"]["region_id"]))
    return [k for k, source in enumerate(sources) if source == segmasks.SOURCE_BOX]


def refine_shard(path: Path, out_dir: Path, masker, options: MaskOptions, progress: MaskProgress | None) -> dict:
    """Write OUT/<name>.tar for one input shard; returns its counts."""
    counts: Counter[str] = Counter()
    with atomic_output(out_dir / path.name) as temp, TarShardWriter(temp) as writer:
        for batch in _batches(tarformat.iter_shard(path), options.batch_images):
            started = time.perf_counter()
            metas = [reader.decode_meta(raw) for raw in batch]
            images = [reader.decode_image(raw[keys.IMAGE]) for raw in batch]
            prompted = [prompts_of(meta) for meta in metas]
            boxes = [np.asarray(meta["regions"]["box"], np.float64).reshape(-1, 4)[p] for meta, p in zip(metas, prompted)]
            predictions = masker.predict(images, boxes=boxes)
            for raw, prediction, chosen in zip(batch, predictions, prompted):
                for name, data in refine_sample(raw, prediction, chosen, options, counts).items():
                    writer.write(f"{raw[keys.KEY]}.{name}", data)
            counts["images"] += len(batch)
            if progress:
                progress.advance(len(batch), 0, time.perf_counter() - started)
    part = {name: counts[name] for name in ("images",) + COUNTS}
    write_json_atomically(out_dir / PARTS_DIR / f"{path.stem}.json", part, sort_keys=True)
    return counts


def _batches(samples: Iterator[dict], size: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for sample in samples:
        batch.append(sample)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def model_fingerprint(sam_dir: Path) -> str:
    """A digest of the model folder's file names, sizes and config: another model, another job."""
    digest = hashlib.sha256()
    for item in sorted(p for p in sam_dir.rglob("*") if p.is_file()):
        digest.update(f"{item.relative_to(sam_dir)}:{item.stat().st_size}\n".encode())
        if item.suffix == ".json":
            digest.update(item.read_bytes())
    return digest.hexdigest()[:16]


def input_shards(in_dir: Path) -> list[Path]:
    if not in_dir.is_dir():
        raise UserError(f"--shards {in_dir}: not a folder of shards")
    shards = sorted(in_dir.glob("*.tar"))
    if not shards:
        raise UserError(f"--shards {in_dir}: no *.tar shards there")
    return shards


def prepare(in_dir: Path, out_dir: Path, sam_dir: Path, options: MaskOptions) -> tuple[list[Path], list[Path]]:
    """Check the job, write or compare its config; -> (all input shards, those still to do)."""
    from fcdata.sam import model_kind, resolve_device

    shards = input_shards(in_dir)
    model_kind(sam_dir)  # a wrong folder or device must not leave a config behind
    resolve_device(options.device)
    if out_dir.resolve() == in_dir.resolve():
        raise UserError("--out must differ from --shards (the input shards are read, never rewritten)")
    config = {"options": options.output_affecting(), "model": model_fingerprint(sam_dir), "shards": [p.name for p in shards]}
    (out_dir / PARTS_DIR).mkdir(parents=True, exist_ok=True)
    path = out_dir / CONFIG_FILE
    if path.exists():
        existing = json.loads(path.read_text())
        if existing != config:
            changed = next(k for k in config if existing.get(k) != config[k])
            raise UserError(f"{out_dir} holds an fc masks job made with other {changed}; use a new --out, or delete it")
    else:
        write_json_atomically(path, config, sort_keys=True)
    for folder in (out_dir, out_dir / PARTS_DIR):
        for leftover in folder.glob("*.tmp*"):
            leftover.unlink()
    todo = [p for p in shards if not (out_dir / PARTS_DIR / f"{p.stem}.json").exists()]
    return shards, todo


def finish(in_dir: Path, out_dir: Path, shards: list[Path], seconds: float) -> dict:
    """Sum the shard parts into masks_summary.json; carry sizes.json over (same samples)."""
    total: Counter[str] = Counter()
    for shard in shards:
        total.update(json.loads((out_dir / PARTS_DIR / f"{shard.stem}.json").read_text()))
    prompted = sum(total[c] for c in (KEPT, LOW_IOU, OUTSIDE, EMPTY))
    summary = {
        "complete": True,
        "images": total["images"],
        "regions": {name: total[name] for name in COUNTS},
        "sam_share_of_prompted": round(total[KEPT] / prompted, 4) if prompted else 0.0,
        "shards": len(shards),
        "last_run_seconds": round(seconds, 2),
    }
    if (in_dir / "sizes.json").exists():
        with atomic_output(out_dir / "sizes.json") as temp:
            shutil.copyfile(in_dir / "sizes.json", temp)
    write_json_atomically(out_dir / SUMMARY_FILE, summary, sort_keys=True)
    return summary


def refine_shards(
    in_dir: Path, out_dir: Path, sam_dir: Path, options: MaskOptions, progress: MaskProgress | None = None,
) -> dict:
    """The whole job in this process (see the module docstring); returns the summary."""
    from fcdata.sam import SamMasker

    started = time.perf_counter()
    shards, todo = prepare(in_dir, out_dir, sam_dir, options)
    if todo:
        masker = SamMasker.load(sam_dir, options.device)
        if progress:
            progress.start(_count_images(in_dir, todo), len(shards), len(shards) - len(todo))
        for shard in todo:
            refine_shard(shard, out_dir, masker, options, progress)
            if progress:
                progress.shard_done()
    return finish(in_dir, out_dir, shards, time.perf_counter() - started)


def _count_images(in_dir: Path, shards: list[Path]) -> int:
    sizes_path = in_dir / "sizes.json"
    sizes = json.loads(sizes_path.read_text()) if sizes_path.exists() else {}
    return sum(sizes.get(p.name, 0) for p in shards)
