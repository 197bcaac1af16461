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

Rows: mask bytes per image and as a share of the rest of the shard (JPEG + JSON + profiles); the
time to decode the 2 masks a training view needs (`fcdata.augment.real_masks`, what the loader
calls), as a share of the in-process loader's time per image (`fcdata.augment.train_views` on
the box-only samples: JSON, JPEG decode, crop, alphas), and that loader time on the same samples
with masks. Then the bytes `fc shard --coco-instances` adds (masks shared per instance), and
`fc masks` images/s with a tiny random SAM and a tiny random SAM2, each beside its forward alone on
the same images (its
ceiling: the rest is shard reading, JPEG decoding, mask encoding and writing).
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


def _with_masks(sample: dict, blobs: list[np.ndarray]) -> dict:
    """The sample as fc masks would write it had SAM accepted every blob (layout runs-v1)."""
    from fcdata import keys, segmasks

    members, fields = segmasks.encode_masks(blobs, [segmasks.SOURCE_SAM] * len(blobs))
    meta = json.loads(sample[keys.META])
    meta["mask"] = {"layout": keys.MASK_LAYOUT_RUNS, **fields}
    out = {}
    for name, data in sample.items():
        out[name] = json.dumps(meta, separators=(",", ":")).encode() if name == keys.META else data
        if name == keys.MASK_PROFILES:
            out.update(members)
    return out


def _layout_rows(samples: list[dict], base: dict, rng: np.random.Generator) -> list[dict]:
    """Bytes and decode time per layout, and the loader's time per image with and without masks."""
    import random

    import pycocotools.mask as coco_mask

    from fcdata import augment, keys, masks
    from fcdata.options import LoaderOptions

    options = LoaderOptions(regions_per_image=2, batch_size=2, full_image_ratio=0.0)
    totals = {"rest": 0, "runs_v1": 0, "crops_1bit_png": 0, "coco_rle_json": 0, "full_frame_png": 0}
    times = {"loader_image": [], "loader_image_masks": [], "runs_v1": [], "coco_rle_json": [], "full_frame_png": []}
    for number, sample in enumerate(samples):
        meta = json.loads(sample[keys.META])
        height, width = meta["height"], meta["width"]
        boxes = meta["regions"]["box"]
        blobs = [blob_mask(b, height, width, rng) for b in boxes]
        rest = sum(len(v) for k, v in sample.items() if k != keys.KEY)
        totals["rest"] += rest
        masked = _with_masks(sample, blobs)
        totals["runs_v1"] += sum(len(v) for k, v in masked.items() if k != keys.KEY) - rest
        rects = np.asarray(json.loads(masked[keys.META])["mask"]["rects"]).reshape(-1, 4)
        crops = [b[r[1]:r[3], r[0]:r[2]] for b, r in zip(blobs, rects)]
        totals["crops_1bit_png"] += len(masks._png_bytes(_crop_lines(crops), max(c.shape[1] for c in crops), sum(c.shape[0] for c in crops), 1, 9))
        rles = coco_mask.encode(np.asfortranarray(np.stack(blobs, axis=2).astype(np.uint8)))
        rle_json = json.dumps([r["counts"].decode() for r in rles], separators=(",", ":"))
        totals["coco_rle_json"] += len(rle_json)
        full_png = masks.encode_png(np.concatenate(blobs, axis=0), compress_level=6)
        totals["full_frame_png"] += len(full_png)

        # The 2 masks a training view needs, drawn as the loader draws them.
        two = np.array(random.Random(number).sample(range(len(boxes)), min(2, len(boxes))), np.int64)
        masked_meta = json.loads(masked[keys.META])
        times["runs_v1"].append(_timed(lambda: augment.real_masks(masked, masked_meta, two)))  # what the loader calls
        times["coco_rle_json"].append(
            _timed(lambda: coco_mask.decode([dict(rles[k], counts=json.loads(rle_json)[k].encode()) for k in two.tolist()]))
        )
        full_rows = [r for k in two.tolist() for r in range(k * height, (k + 1) * height)]
        times["full_frame_png"].append(_timed(lambda: masks.decode_png(full_png, full_rows)))
        times["loader_image"].append(_timed(lambda: augment.train_views(sample, 2, 224, options, random.Random(number))))
        times["loader_image_masks"].append(_timed(lambda: augment.train_views(masked, 2, 224, options, random.Random(number))))

    loader_ms = 1000 * statistics.median(times["loader_image"])
    masks_ms = 1000 * statistics.median(times["loader_image_masks"])
    rows = [
        dict(base, case="loader_image", loader_ms_per_image=round(loader_ms, 4)),
        dict(base, case="loader_image_masks", loader_ms_per_image=round(masks_ms, 4), vs_box_only=round(masks_ms / loader_ms, 3)),
    ]
    for case in ("runs_v1", "crops_1bit_png", "coco_rle_json", "full_frame_png"):
        row = dict(
            base, case=case, masks="distinct blob per region (SAM-like, worst case)",
            mask_bytes_per_image=round(totals[case] / len(samples)),
            mask_share_of_rest=round(totals[case] / totals["rest"], 4),
        )
        if case in times:
            decode_ms = 1000 * statistics.median(times[case])
            row.update(decode_2_masks_ms=round(decode_ms, 4), decode_share_of_loader_image=round(decode_ms / loader_ms, 4))
        rows.append(row)
    return rows


def _coco_row(vg_root: Path, work: Path, base: dict) -> dict:
    """Mask bytes of fc shard --coco-instances on the corpus' COCO file (shared instance masks)."""
    from fcdata import keys
    from fcdata.options import ShardOptions
    from fcdata.tarformat import iter_shard
    from fcdata.shard import shard_vg
    from fcdata.synth_coco import INSTANCES_FILE

    out = work / "masks-shards-coco"
    summary = shard_vg(vg_root, out, ShardOptions(val_fraction=0.0, workers=1, coco_instances=(str(vg_root / INSTANCES_FILE),))).data
    real = rest = images = with_masks = 0
    for shard in sorted(out.glob("train-*.tar")):
        for sample in iter_shard(shard):
            images += 1
            mask_bytes = len(sample.get(keys.MASK_RUNS, b"")) + len(sample.get(keys.MASK_CROPS, b""))
            with_masks += mask_bytes > 0
            real += mask_bytes
            rest += sum(len(v) for k, v in sample.items() if k != keys.KEY) - mask_bytes
    return dict(
        base, case="coco_runs_v1", masks="fc shard --coco-instances (synth shapes, half the images COCO)",
        images_with_masks=with_masks, regions_with_coco_mask=summary["masks"]["regions_by_source"]["coco"],
        mask_bytes_per_image=round(real / images), mask_share_of_rest=round(real / rest, 4),
    )


def _sam_rows(shard_dir: Path, work: Path, base: dict, images: int) -> list[dict]:
    """fc masks images/s with a tiny random SAM and a tiny random SAM2 on this machine, each beside
    its forward alone on the same images."""
    import shutil

    from fcdata import keys, reader, tarformat
    from fcdata.options import MaskOptions
    from fcdata.refine import refine_shards
    from fcdata.sam import SamMasker, tiny_sam, tiny_sam2

    subset = work / "masks-sam-in"
    shutil.rmtree(subset, ignore_errors=True)
    subset.mkdir(parents=True)
    first = sorted(shard_dir.glob("train-*.tar"))[0]
    shutil.copyfile(first, subset / first.name)
    raws = list(tarformat.iter_shard(first))[:images]
    options = MaskOptions()
    pictures = [reader.decode_image(r[keys.IMAGE]) for r in raws]
    prompts = [np.asarray(reader.decode_meta(r)["regions"]["box"], np.float64) for r in raws]
    rows = []
    for kind, make in (("sam", tiny_sam), ("sam2", tiny_sam2)):
        sam_dir = make(work / f"tiny-{kind}")
        masker = SamMasker.load(sam_dir)
        model = f"tiny random {kind.upper()} ({sum(p.numel() for p in masker.model.parameters()) / 1e6:.2f} M parameters)"
        masker.predict(pictures[:1], boxes=prompts[:1])  # warm-up
        started = time.perf_counter()
        for start in range(0, len(raws), options.batch_images):
            masker.predict(pictures[start : start + options.batch_images], boxes=prompts[start : start + options.batch_images])
        alone = len(raws) / (time.perf_counter() - started)
        out = work / f"masks-{kind}-out"
        shutil.rmtree(out, ignore_errors=True)
        started = time.perf_counter()
        summary = refine_shards(subset, out, sam_dir, options)
        job = summary["images"] / (time.perf_counter() - started)
        suffix = "" if kind == "sam" else "_sam2"  # SAM's case names stay those of earlier records
        rows += [
            dict(base, case=f"{kind}_predict_only", model=model, device=str(masker.device), images=len(raws), images_per_s=round(alone, 1)),
            dict(base, case=f"fc_masks{suffix}", model=model, device=str(masker.device), images=summary["images"],
                 images_per_s=round(job, 1), vs_predict_only=round(job / alone, 3)),
        ]
    return rows


def run(work: Path, images: int = 200, regions_per_image: int = 50, sam_images: int = 100, save: bool = True) -> list[dict]:
    from fcdata.options import ShardOptions, SynthOptions
    from fcdata.tarformat import iter_shard
    from fcdata.shard import shard_vg
    from fcdata.synth import generate_vg

    vg_root, shard_dir = work / "masks-vg", work / "masks-shards"
    generate_vg(vg_root, SynthOptions(num_images=images, regions_per_image=regions_per_image))
    shard_vg(vg_root, shard_dir, ShardOptions(val_fraction=0.0, workers=1))
    samples = [s for shard in sorted(shard_dir.glob("train-*.tar")) for s in iter_shard(shard)]
    base = {"bench": "masks", "images": len(samples), "regions_per_image": round(
        sum(len(json.loads(s["json"])["regions"]["region_id"]) for s in samples) / len(samples), 1)}
    machine = machine_info()
    rows = _layout_rows(samples, base, np.random.default_rng(0))
    rows.append(_coco_row(vg_root, work, base))
    rows += _sam_rows(shard_dir, work, base, sam_images)
    for row in rows:
        emit(row)
    if save:
        print(f"recorded: {record('masks', rows, machine)}")
    return rows
