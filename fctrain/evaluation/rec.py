"""Zero-shot referring-expression comprehension (REC) on RefCOCO, RefCOCO+ and RefCOCOg, as
ReCLIP's `main.py` scores it (the protocol FALIP and Alpha-CLIP report):

- Data as users hold it: DATA/<dataset>/instances.json (COCO format) and refs(unc).p / refs(umd).p
  (a Python-2 pickle of plain lists and dicts, read by fcdata.plain_pickle), images from COCO
  train2014 (the refs' file names without their last `_` field).
- Every sentence of every ref of the split is one expression, scored against the proposals of its
  image: all COCO annotations of the image (the ground-truth-box setting), or a detections file
  (image id -> [[x, y, w, h], ...]; an image without detections gets the whole image).
- Text: "a photo of " + the raw sentence lower-cased. The view: the image squashed to the
  model's square input, bicubic (ReCLIP's `square_size` default).
- Correct when the chosen proposal has IoU > 0.5 with the referred annotation's box; ties among
  the top proposals count as a random pick (whole-image CLIP scores chance).
- `subtract`: each proposal's score minus its mean score over a bank of other expressions of the
  split (FALIP's `score_subtracting`, after Shtedritski et al.), which removes a prompt's bias
  towards some proposals whatever the text.
"""

from __future__ import annotations

import json
import random
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fcdata.errors import UserError
from fcdata.plain_pickle import load_plain_pickle
from fctrain.evaluation.common import EvalProgress, NoProgress, Tally, check_positive, prefetched
from fctrain.evaluation.methods import GEOMETRIES, METHODS, MethodTexts, Region, Tower, check_methods, needs_masks, views_of
from fctrain.evaluation.scoring import box_iou, tie_aware_hit

DATASETS = {"refcoco": "unc", "refcoco+": "unc", "refcocog": "umd"}  # dataset -> the refs file's splitBy
# Each box prompt beside its mask version (the annotation's COCO segmentation: Alpha-CLIP's baselines).
DEFAULT_METHODS = ("alpha_box", "alpha_mask", "whole_image", "crop", "crop_mask", "blur", "blur_mask", "crop_blur", "crop_blur_mask",
                   "red_circle", "grayscale", "grayscale_mask", "falip")
IOU_THRESHOLD = 0.5  # strictly greater, as ReCLIP
TEXT_PROMPT = "a photo of {}"


@dataclass
class RecOptions:
    dataset: str  # refcoco, refcoco+ or refcocog
    data_dir: Path  # holds <dataset>/instances.json and refs(<splitBy>).p
    split: str  # val, testA, testB (RefCOCO, RefCOCO+) or val, test (RefCOCOg umd)
    images_dir: Path | None = None  # COCO train2014/; default DATA/train2014
    proposals: Path | None = None  # detections JSON; None = the ground-truth boxes
    methods: tuple[str, ...] = DEFAULT_METHODS
    max_images: int = 0  # 0 = every image of the split (in the refs' order)
    batch_size: int = 64  # model inputs per forward pass
    images_per_chunk: int = 8  # images whose views are built and encoded together
    subtract: bool = False  # score minus the mean score over a bank of the split's other expressions
    bank_size: int = 500  # expressions in that bank (FALIP samples 500)
    examples: int = 8  # expressions drawn in eval-<dataset>-examples.png
    seed: int = 0  # the bank's sample
    workers: int = 0  # threads building views; 0 = one per available core


@dataclass
class RecImage:
    image_id: int
    file_name: str  # COCO name, e.g. COCO_train2014_000000581857.jpg
    boxes: np.ndarray  # K x 4 proposals, x0 y0 x1 y1
    segmentations: list | None  # K COCO segmentations (ground-truth setting), else None
    expressions: list[tuple[str, np.ndarray]] = field(default_factory=list)  # (sentence, gold box x0 y0 x1 y1)


@dataclass
class RecReport:
    benchmark: str
    split: str
    settings: dict
    counts: dict  # refs, images, expressions, skips, proposals per image, chance
    results: dict[str, dict]  # method -> accuracy, hits, expressions
    examples: list[dict] = field(default_factory=list)
    example_images: dict = field(default_factory=dict, repr=False)  # file name -> H x W x 3 uint8; not in JSON

    def to_dict(self) -> dict:
        return {"benchmark": self.benchmark, "split": self.split, "settings": self.settings, "counts": self.counts,
                "results": self.results, "examples": self.examples}


# ----------------------------------------------------------------------------- reading


def _xywh_to_xyxy(box) -> np.ndarray:
    x, y, w, h = (float(v) for v in box)
    return np.array([x, y, x + w, y + h])


def coco_file_name(ref_file_name: str) -> str:
    """refs' `COCO_train2014_000000581857_16.jpg` -> `COCO_train2014_000000581857.jpg`."""
    stem = ref_file_name.rsplit(".", 1)[0]
    return stem.rsplit("_", 1)[0] + ".jpg" if "coco" in stem.lower() else ref_file_name


def load_refs(dataset_dir: Path, split_by: str) -> list[dict]:
    path = dataset_dir / f"refs({split_by}).p"
    refs = load_plain_pickle(path)
    needed = ("ann_id", "image_id", "split", "sentences", "file_name")
    if not isinstance(refs, list) or not all(isinstance(r, dict) and all(k in r for k in needed) for r in refs):
        raise UserError(f"{path}: expected a list of refs, each a dict with {', '.join(needed)}")
    return refs


def load_instances(path: Path) -> tuple[dict[int, dict], dict[int, list[dict]]]:
    """(annotation id -> annotation, image id -> its annotations in file order)."""
    if not path.is_file():
        raise UserError(f"{path}: no such file (the dataset's COCO instances file)")
    try:
        data = json.loads(path.read_text())
        annotations = data["annotations"]
        by_id = {int(a["id"]): a for a in annotations}
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: not a COCO instances file ({exc})") from None
    by_image: dict[int, list[dict]] = {}
    for annotation in annotations:
        by_image.setdefault(int(annotation["image_id"]), []).append(annotation)
    return by_id, by_image


def load_proposals(path: Path) -> dict[int, list]:
    """A detections file: {image_id: [[x, y, w, h], ...]} or [{"image_id": ..., "box": [x, y, w, h]}, ...]."""
    if not path.is_file():
        raise UserError(f"{path}: no such proposals file")
    try:
        data = json.loads(path.read_text())
        if isinstance(data, dict):
            out = {int(k): [list(map(float, b[:4])) for b in v] for k, v in data.items()}
        else:
            out = {}
            for row in data:
                out.setdefault(int(row["image_id"]), []).append(list(map(float, row["box"][:4])))
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise UserError(f"{path}: not a proposals file (image id -> list of [x, y, w, h]): {exc}") from None
    return out


def split_images(options: RecOptions) -> tuple[list[RecImage], Counter]:
    """The split's images with their proposals and expressions, in the refs' order."""
    if options.dataset not in DATASETS:
        raise UserError(f"unknown REC dataset {options.dataset!r}; known: {', '.join(DATASETS)}")
    dataset_dir = Path(options.data_dir) / options.dataset
    if not dataset_dir.is_dir():
        raise UserError(f"{dataset_dir}: no such folder (expected DATA/{options.dataset}/ with instances.json and refs({DATASETS[options.dataset]}).p)")
    refs = load_refs(dataset_dir, DATASETS[options.dataset])
    splits = sorted({str(r["split"]) for r in refs})
    if options.split not in splits:
        raise UserError(f"{options.dataset} has no split {options.split!r}; its splits: {', '.join(splits)}")
    annotations, by_image = load_instances(dataset_dir / "instances.json")
    detections = load_proposals(options.proposals) if options.proposals else None
    counts: Counter = Counter()
    images: dict[int, RecImage] = {}
    for ref in refs:
        if ref["split"] != options.split:
            continue
        counts["refs"] += 1
        gold = annotations.get(int(ref["ann_id"]))
        if gold is None:
            counts["refs_without_annotation"] += 1
            continue
        image_id = int(ref["image_id"])
        if image_id not in images:
            if options.max_images and len(images) == options.max_images:
                continue
            anns = by_image.get(image_id, [])
            if detections is None:
                boxes, segmentations = np.array([_xywh_to_xyxy(a["bbox"]) for a in anns]).reshape(-1, 4), [a.get("segmentation") for a in anns]
            else:
                boxes, segmentations = np.array([_xywh_to_xyxy(b) for b in detections.get(image_id, [])]).reshape(-1, 4), None
            images[image_id] = RecImage(image_id, coco_file_name(str(ref["file_name"])), boxes, segmentations)
        for sentence in ref["sentences"]:
            images[image_id].expressions.append((str(sentence["raw"]).lower(), _xywh_to_xyxy(gold["bbox"])))
    return list(images.values()), counts


def decode_segmentation(segmentation, height: int, width: int) -> np.ndarray:
    """A COCO segmentation (polygons, uncompressed or compressed RLE) -> H x W uint8 0/255."""
    from pycocotools import mask as coco_mask

    if isinstance(segmentation, list):  # polygons, each a flat [x0, y0, x1, y1, ...]
        rle = coco_mask.merge(coco_mask.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        rle = coco_mask.frPyObjects(segmentation, height, width)
    elif isinstance(segmentation, dict):
        counts = segmentation["counts"]
        rle = {"size": segmentation["size"], "counts": counts.encode() if isinstance(counts, str) else counts}
    else:
        raise ValueError(f"not a COCO segmentation: {type(segmentation).__name__}")
    if tuple(rle["size"]) != (height, width):
        raise ValueError(f"segmentation is {rle['size'][0]} x {rle['size'][1]}, the image {height} x {width}")
    with warnings.catch_warnings():  # pycocotools 2.0.x warns about NumPy 2's copy keyword on every decode
        warnings.simplefilter("ignore", DeprecationWarning)
        return coco_mask.decode(rle).astype(np.uint8) * 255


def _load_image(path: Path) -> np.ndarray | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (FileNotFoundError, UnidentifiedImageError, OSError):
        return None


# ----------------------------------------------------------------------------- the protocol


def read_split(options: RecOptions) -> tuple[list[RecImage], Counter]:
    """Check the options and read the split (before any model is loaded, so bad input fails fast)."""
    check_methods(options.methods)
    check_positive(batch_size=options.batch_size, bank_size=options.bank_size)
    masked = [m for m in options.methods if needs_masks(m)]
    if options.proposals and masked:
        raise UserError(f"{masked[0]} needs the ground-truth setting (COCO segmentations); detector proposals have no masks: drop {', '.join(masked)} from --methods")
    images, counts = split_images(options)
    if not images:
        raise UserError(f"{options.dataset} {options.split}: no expressions to evaluate")
    return images, counts


def evaluate_rec(model, tokenizer, options: RecOptions, progress: EvalProgress | None = None, model_note: str = "",
                 split: tuple[list[RecImage], Counter] | None = None) -> RecReport:
    """Accuracy of every method on the split (see the module docstring); `split` from read_split."""
    images, counts = split or read_split(options)
    progress = progress or NoProgress()
    images_dir = Path(options.images_dir or Path(options.data_dir) / "train2014")
    views = views_of(options.methods)
    tower = Tower(model, options.batch_size, options.workers)
    texts = [TEXT_PROMPT.format(sentence) for image in images for sentence, _ in image.expressions]
    first_text = np.cumsum([0] + [len(image.expressions) for image in images])  # image i's rows of `texts`
    with torch.inference_mode():
        text_rows = MethodTexts(model, tokenizer, texts, options.batch_size, tower.device)
        if options.subtract:
            bank = random.Random(options.seed).sample(texts, min(options.bank_size, len(texts)))
            # score - mean bank score = image . (text - mean bank text)
            text_rows = text_rows.minus_mean_of(MethodTexts(model, tokenizer, bank, options.batch_size, tower.device))
    skips: Counter = Counter()  # written only by `prepare`, which runs in one background thread

    def prepare(chunk: list[int]):
        items = []
        for index in chunk:
            image = images[index]
            pixels = _load_image(images_dir / image.file_name)
            if pixels is None:
                skips["images_missing"] += 1
                skips["expressions_skipped"] += len(image.expressions)
                continue
            regions = _regions(image, pixels, any(needs_masks(m) for m in options.methods), skips)
            if regions is not None:
                items.append((index, pixels, regions))
        return items, tower.build([(pixels, regions) for _, pixels, regions in items], views, GEOMETRIES["squash"])

    hits = {m: [] for m in options.methods}
    chance, tally = [], Tally(counts, options.examples)
    chunks = [list(range(start, min(start + options.images_per_chunk, len(images)))) for start in range(0, len(images), options.images_per_chunk)]
    progress.start(len(images), f"{options.dataset} {options.split}")
    try:
        for chunk, (items, built) in zip(chunks, prefetched(prepare, chunks)):
            for (index, pixels, regions), by_view in zip(items, tower.run(built)):
                image = images[index]
                boxes = np.array([r.box for r in regions])
                counts["images"] += 1
                counts["proposals"] += len(regions)
                for number, (sentence, gold) in enumerate(image.expressions):
                    row = first_text[index] + number
                    correct = box_iou(gold, boxes) > IOU_THRESHOLD
                    chance.append(float(correct.mean()))
                    counts["expressions"] += 1
                    for method in options.methods:
                        text = text_rows.of(METHODS[method])[row]
                        scores = sum(by_view[v] @ text for v in METHODS[method]).numpy()
                        hits[method].append(tie_aware_hit(scores, correct))
                        if method == options.methods[0]:
                            tally.example({"file_name": image.file_name, "expression": sentence, "method": method,
                                           "boxes": boxes.round(1).tolist(), "chosen": int(scores.argmax()), "gold": gold.round(1).tolist(),
                                           "correct": bool(correct[scores.argmax()])}, image.file_name, pixels)
            progress.advance(len(chunk))
    finally:
        tower.close()
    tally.finish(skips, "expressions", f"{options.dataset} {options.split}: none of the {len(images)} images could be read from {images_dir} (--images)")
    results = {m: {"accuracy": float(np.mean(h)), "hits": float(np.sum(h)), "expressions": len(h)} for m, h in hits.items()}
    counts["proposals_per_image"] = counts.pop("proposals") / counts["images"]
    counts["chance"] = float(np.mean(chance))
    settings = {
        "setting": "detector" if options.proposals else ("gt-boxes, subtracted" if options.subtract else "gt-boxes"),
        "dataset": options.dataset, "refs_file": f"refs({DATASETS[options.dataset]}).p",
        "proposals": str(options.proposals) if options.proposals else "ground-truth boxes (every COCO annotation of the image)",
        "text_prompt": TEXT_PROMPT.format("<expression lower-cased>"), "view": "squash (bicubic) to the model's input",
        "iou": f"> {IOU_THRESHOLD}", "ties": "random pick among the top-scoring proposals",
        "subtract": f"mean over {options.bank_size} expressions of the split (seed {options.seed})" if options.subtract else False,
        "image_size": model.image_size, "max_images": options.max_images, "model": model_note,
        "accuracy_denominator": "expressions of the images that could be read (expressions_skipped are left out)",
    }
    return RecReport(options.dataset, options.split, settings, dict(counts), results, tally.examples, tally.example_images)


def _regions(image: RecImage, pixels: np.ndarray, need_masks: bool, counts: Counter) -> list[Region] | None:
    """The image's proposals as Regions (whole image if there are none); None (counted) if its
    masks cannot be decoded."""
    height, width = pixels.shape[:2]
    if not len(image.boxes):
        counts["images_without_proposals"] += 1
        return [Region((0.0, 0.0, float(width), float(height)), np.full((height, width), 255, np.uint8) if need_masks else None)]
    regions = []
    for k, box in enumerate(image.boxes):
        mask = None
        if need_masks:
            try:
                mask = decode_segmentation(image.segmentations[k], height, width)
            except (ValueError, KeyError, TypeError, IndexError):
                counts["images_bad_segmentation"] += 1
                counts["expressions_skipped"] += len(image.expressions)
                return None
        regions.append(Region(tuple(float(v) for v in box), mask))
    return regions
