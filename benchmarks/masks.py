"""Segmentation-mask storage: bytes per image and decode time per training view, per layout.

On shards of a generated VG-like corpus (~50 regions per image), every region is given a distinct
non-box mask (a smooth random blob filling its box: the worst case, what `fc masks` writes with
SAM; COCO masks are shared by the regions of one instance and cost less). Cases, in one run:

- runs_v1: the layout `fcdata.segmasks` writes (per mask row of the tight rectangle, the columns
  where it switches, 16-bit, Up-filtered, one PNG), JSON fields included.
- crops_1bit_png (baseline, bytes only): the same crops as 1-bit pixels, Up-filtered, one PNG.
- coco_rle_json (baseline): COCO compressed RLE strings in the JSON (pycocotools), decoded by
  pycocotools.
- full_frame_png (baseline): K full-size 1-bit masks stacked in one PNG (like stack-v1).

Rows: mask bytes per image and as a share of the rest of the shard (JPEG + JSON + profiles), and
the time to decode the 2 masks a training view needs, as a share of the in-process loader's time
per image (`fcdata.augment.decode_views` on the box-only shards: JSON, JPEG decode, crop, alphas).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import numpy as np

from fcbench.common import emit, machine_info, record


def blob_mask(box, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth star-shaped blob inscribed in `box` (x0, y0, x1, y1), as an H x W bool mask."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    u, v = (xs + 0.5 - cx) / max(0.5, (x1 - x0) / 2), (ys + 0.5 - cy) / max(0.5, (y1 - y0) / 2)
    angle, radius = np.arctan2(v, u), np.hypot(u, v)
    limit = 0.85 + sum(a * np.sin(n * angle + p) for n, a, p in zip((2, 3, 5), rng.uniform(0.03, 0.12, 3), rng.uniform(0, 6.3, 3)))
    mask = np.zeros((height, width), bool)
    mask[y0:y1, x0:x1] = radius <= limit
    return mask


def _crop_lines(crops: list[np.ndarray]) -> np.ndarray:
    """The baseline 1-bit atlas: crops packed to bits, zero-padded to the widest, Up-filtered."""
    from fcdata.segmasks import _filtered_lines

    packed = [np.packbits(c, axis=1) for c in crops]
    width = max(p.shape[1] for p in packed)
    return _filtered_lines([np.pad(p, ((0, 0), (0, width - p.shape[1]))) for p in packed])


def _timed(function, repeats: int = 5) -> float:
    """Median seconds of one call."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def run(work: Path, images: int = 200, regions_per_image: int = 50, save: bool = True) -> list[dict]:
    import random

    import pycocotools.mask as coco_mask

    from fcdata import keys, masks, segmasks
    from fcdata.augment import decode_views
    from fcdata.options import LoaderOptions, ShardOptions, SynthOptions
    from fcdata.reader import iter_shard
    from fcdata.shard import shard_vg
    from fcdata.synth import generate_vg

    vg_root, shard_dir = work / "masks-vg", work / "masks-shards"
    generate_vg(vg_root, SynthOptions(num_images=images, regions_per_image=regions_per_image))
    shard_vg(vg_root, shard_dir, ShardOptions(val_fraction=0.0, workers=1))
    samples = [s for shard in sorted(shard_dir.glob("train-*.tar")) for s in iter_shard(shard)]
    options = LoaderOptions(regions_per_image=2, batch_size=2)

    rng = np.random.default_rng(0)
    totals = {"rest": 0, "runs_v1": 0, "crops_1bit_png": 0, "coco_rle_json": 0, "full_frame_png": 0}
    times = {"loader_image": [], "runs_v1": [], "coco_rle_json": [], "full_frame_png": []}
    regions_seen = 0
    for number, sample in enumerate(samples):
        meta = json.loads(sample[keys.META])
        height, width = meta["height"], meta["width"]
        boxes = meta["regions"]["box"]
        regions_seen += len(boxes)
        blobs = [blob_mask(b, height, width, rng) for b in boxes]
        totals["rest"] += sum(len(v) for k, v in sample.items() if k != keys.KEY)

        members, mask_meta = segmasks.encode_masks(blobs, [segmasks.SOURCE_SAM] * len(blobs))
        runs_png = members[keys.MASK_RUNS]
        totals["runs_v1"] += len(runs_png) + len(json.dumps(mask_meta, separators=(",", ":")))
        crops = [b[r[1]:r[3], r[0]:r[2]] for b, r in zip(blobs, mask_meta["rects"])]
        totals["crops_1bit_png"] += len(masks._png_bytes(_crop_lines(crops), max(c.shape[1] for c in crops), sum(c.shape[0] for c in crops), 1, 9))
        rles = coco_mask.encode(np.asfortranarray(np.stack(blobs, axis=2).astype(np.uint8)))
        rle_json = json.dumps([r["counts"].decode() for r in rles], separators=(",", ":"))
        totals["coco_rle_json"] += len(rle_json)
        full_png = masks.encode_png(np.concatenate(blobs, axis=0), compress_level=6)
        totals["full_frame_png"] += len(full_png)

        two = [0, len(boxes) - 1] if len(boxes) > 1 else [0]
        rows, cols = masks.decode_profiles(sample[keys.MASK_PROFILES], height, two)
        times["runs_v1"].append(_timed(lambda: segmasks.region_masks(runs_png, rows, cols, mask_meta, two)))
        times["coco_rle_json"].append(
            _timed(lambda: coco_mask.decode([dict(rles[k], counts=c.encode()) for k, c in zip(two, [json.loads(rle_json)[k] for k in two])]))
        )
        full_rows = [r for k in two for r in range(k * height, (k + 1) * height)]
        times["full_frame_png"].append(_timed(lambda: masks.decode_png(full_png, full_rows)))
        times["loader_image"].append(
            _timed(lambda: decode_views(sample, 2, 224, options, random.Random(number)))
        )

    machine = machine_info()
    loader_ms = 1000 * statistics.median(times["loader_image"])
    base = {"bench": "masks", "images": len(samples), "regions_per_image": round(regions_seen / len(samples), 1)}
    rows_out = [dict(base, case="loader_image", loader_ms_per_image=round(loader_ms, 4))]
    for case in ("runs_v1", "crops_1bit_png", "coco_rle_json", "full_frame_png"):
        row = dict(
            base, case=case,
            mask_bytes_per_image=round(totals[case] / len(samples)),
            mask_share_of_rest=round(totals[case] / totals["rest"], 4),
        )
        if case in times:
            decode_ms = 1000 * statistics.median(times[case])
            row.update(decode_2_masks_ms=round(decode_ms, 4), decode_share_of_loader_image=round(decode_ms / loader_ms, 4))
        rows_out.append(row)
    for row in rows_out:
        emit(row)
    if save:
        print(f"recorded: {record('masks', rows_out, machine)}")
    return rows_out
