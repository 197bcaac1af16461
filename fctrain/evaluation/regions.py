"""`fc eval`: region-level accuracy of the fine-tuned RGBA model beside training-free baselines.

Candidates: for each validation image, its first `max_regions` regions with distinct phrases
(ignoring case), all in the evaluation view (letterboxed, no randomness). Metrics per method:
- box selection: for each phrase, score every candidate box of the same image; correct when the
  best box is the phrase's own or overlaps it with IoU >= iou_threshold. The headline: whole-image
  CLIP cannot tell one image's regions apart, so it sits at chance there.
- phrase selection: for each box, rank the image's phrases: R@1, R@5, mean rank.
- global retrieval over all validation regions: region -> phrase and phrase -> region R@1 / R@5
  (captions equal ignoring case are one caption).
- zero-shot region classification: the region's Visual Genome object name (or a user's class list)
  among all class names, prompted "a photo of a {name}.": top-1 / top-5.
Ties (whole-image embeddings are identical for all regions of an image) count as a random pick
among the tied candidates, so chance-level methods score chance, not 0 or 1.

Methods: focus (the fine-tuned model, alpha = the region's box), focus_mask (the same model and
candidates, alpha = the region's real mask where the shard has one (COCO or SAM, layout runs-v1),
its box elsewhere: Alpha-CLIP's "rectangular box vs mask" comparison), focus_whole (the same model
with an all-ones alpha, one embedding per image: what fine-tuning did to whole-image recognition,
to compare with whole_image's retrieval and classification), untrained (base weights and a zero
alpha conv: CLIP itself), and the prompts of fctrain.prompts on the base weights, each box
prompt beside its mask version (crop_mask, blur_mask, grayscale_mask: the real mask, or the box
where there is none). All run through the shared evaluation tower (fctrain.evaluation.methods):
the alpha rows on the loader's evaluation view, the prompts drawn on the stored image and
letterboxed, blur at 2% of the long side.
"""

from __future__ import annotations

import functools
import itertools
import json
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch

from fcdata import guard
from fcdata.errors import CountingHandler
from fcdata.augment import eval_view
from fcdata.loader import phrase_key, resolve_shards
from fctrain.config import EVAL_METHODS, EvalOptions
from fctrain.evaluation.common import prefetched
from fctrain.evaluation.methods import GEOMETRIES, METHOD_TITLES, METHODS, BuiltViews, MethodTexts, PromptSettings, Region, Tower, ViewInputs, check_methods, pixel_box, views_of
from fctrain.evaluation.scoring import box_iou, tie_aware_hit, tie_aware_rank
from fctrain.model import RGBAClip
from fctrain.prompts import patch_bias

@dataclass
class EvalImage:
    image_id: int
    stored: object  # PIL RGB image at its stored size
    letterboxed: np.ndarray  # S x S x 3 uint8
    alphas: np.ndarray  # K x S x S uint8
    boxes: np.ndarray  # K x 4 float, stored pixels
    model_boxes: np.ndarray  # K x 4 float, in the letterboxed S x S view
    phrases: list[str]
    objects: list[str]  # the VG object name of each region, "" if none
    mask_alphas: np.ndarray | None = None  # K x S x S uint8: real masks where the shard has them, else the box
    mask_crops: list | None = None  # per region: its real mask (h x w uint8 crop, rect x0 y0 x1 y1 in stored pixels) or None


@dataclass
class EvalReport:
    images: int
    regions: int
    results: dict[str, dict[str, float]]  # method -> metric -> value
    regions_with_mask: int = 0  # candidates whose focus_mask alpha is a real mask, not their box
    examples: list[dict] = field(default_factory=list)  # box selections of the focus method, for pictures
    skipped: dict[str, int] = field(default_factory=dict)  # unreadable shards and samples, by reason
    example_images: dict[int, EvalImage] = field(default_factory=dict, repr=False)  # their images; not in JSON
    architecture: str = "alpha_conv"  # the evaluated model's (ModelConfig.architecture): its focus rows' titles

    def title(self, method: str) -> str:
        title = METHOD_TITLES.get(method, method)
        if method in ("focus", "focus_mask", "focus_whole") and self.architecture == "object_guided":
            return title.replace("Focus-CLIP", "Obj-guided")
        return title

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("example_images")
        return json.dumps(data, indent=2)


def load_eval_images(options: EvalOptions, size: int, handler: CountingHandler | None = None) -> list[EvalImage]:
    """The first max_images images (with at least one region) of the shards, evaluation view.
    Unreadable shards and samples are skipped and counted in `handler`; none left is a UserError."""
    handler = handler or CountingHandler("fc eval")
    shards = resolve_shards(options.shards, options.split)
    guard.check_shards(shards, "validation shards")
    decode = functools.partial(_eval_image, size=size, options=options)
    images = list(itertools.islice(guard.decoded(guard.read_raw(shards, handler), decode, handler), options.max_images))
    guard.require_any(len(images), handler, f"validation shards {options.shards}")
    return images


def _eval_image(sample: dict, size: int, options: EvalOptions) -> EvalImage:
    view = eval_view(sample, size, max_regions=options.max_regions)
    if not len(view.regions):
        raise ValueError("no region to evaluate")
    names = view.meta["regions"].get("object_names") or [[] for _ in view.meta["regions"]["phrase"]]
    return EvalImage(
        image_id=view.image_id, stored=view.stored, letterboxed=view.image, alphas=view.box_alphas,
        boxes=view.boxes, model_boxes=view.view_boxes, phrases=view.phrases,
        objects=[(names[k][0].lower() if names[k] else "") for k in view.regions.tolist()],
        mask_alphas=view.alphas, mask_crops=view.mask_crops,
    )


# Views made from the loader's evaluation view (EvalImage.letterboxed and its alphas: the inputs the
# model trained on); the visual prompts are drawn on the stored image by the shared tower.
_FROM_EVAL_VIEW = ("alpha_box", "alpha_mask", "alpha_whole", "untrained", "whole_image", "attention_bias")
IMAGES_PER_CHUNK = 16  # images whose views are built (in a background thread) and encoded together


def stored_regions(image: EvalImage) -> list[Region]:
    """The candidates in stored pixels, each with its real mask, or its box as a mask where it has
    none (so a mask prompt equals its box prompt there, as focus_mask falls back to the box alpha)."""
    width, height = image.stored.size
    regions = []
    for box, real in zip(image.boxes, image.mask_crops or [None] * len(image.boxes)):
        mask = np.zeros((height, width), np.uint8)
        if real is None:
            x0, y0, x1, y1 = pixel_box(box, width, height)
            mask[y0:y1, x0:x1] = 255
        else:
            crop, (x0, y0, x1, y1) = real
            mask[y0:y1, x0:x1] = crop[: max(0, min(y1, height) - y0), : max(0, min(x1, width) - x0)]
        regions.append(Region(tuple(float(v) for v in box), mask))
    return regions


def _eval_view_inputs(image: EvalImage, view: str, grid: int, strength: float) -> ViewInputs:
    count, size = len(image.phrases), image.letterboxed.shape[0]
    pictures = np.repeat(image.letterboxed[None], count, 0)
    if view in ("whole_image", "alpha_whole"):  # one input per image (the tower shares it among its regions)
        return ViewInputs(image.letterboxed[None], np.full((1, size, size), 255, np.uint8), None)
    if view == "attention_bias":
        return ViewInputs(pictures, np.zeros((count, size, size), np.uint8), patch_bias(image.model_boxes, grid, size, strength).numpy())
    return ViewInputs(pictures, image.mask_alphas if view == "alpha_mask" else image.alphas, None)


def region_features(method: str, model: RGBAClip, images: list[EvalImage], options: EvalOptions) -> torch.Tensor:
    """R x D features of every candidate region under `method` (R = all regions; the sum of its
    views' unit features), through the shared evaluation tower."""
    views = views_of((method,))
    drawn = tuple(v for v in views if v not in _FROM_EVAL_VIEW)
    tower = Tower(model, options.batch_size, settings=PromptSettings(blur_radius=None, attention_strength=options.attention_strength))

    def prepare(chunk: list[EvalImage]) -> BuiltViews:
        built = tower.build([(np.asarray(image.stored), stored_regions(image)) for image in chunk], drawn, GEOMETRIES["letterbox"])
        for index, image in enumerate(chunk):
            for view in views:
                if view in _FROM_EVAL_VIEW:
                    built.jobs.append((index, view))
                    built.inputs.append(_eval_view_inputs(image, view, tower.grid, options.attention_strength))
        return built

    rows = []
    chunks = [images[start : start + IMAGES_PER_CHUNK] for start in range(0, len(images), IMAGES_PER_CHUNK)]
    try:
        for built in prefetched(prepare, chunks):
            rows.extend(sum(by_view[v] for v in views) for by_view in tower.run(built))
    finally:
        tower.close()
    return torch.cat(rows)


# ----------------------------------------------------------------------------- metrics


def image_metrics(regions: torch.Tensor, texts: torch.Tensor, images: list[EvalImage], iou_threshold: float) -> tuple[dict, list[dict]]:
    """Box and phrase selection within each image (images with >= 2 regions)."""
    box_hits, ranks, r1, r5, picks = [], [], [], [], []
    start = 0
    for image in images:
        count = len(image.phrases)
        block = (regions[start : start + count] @ texts[start : start + count].T).numpy()  # regions x phrases
        start += count
        if count < 2:
            continue
        for k in range(count):
            correct = (np.arange(count) == k) | (box_iou(image.boxes[k], image.boxes) >= iou_threshold)
            box_hits.append(tie_aware_hit(block[:, k], correct))
            picks.append({"image_id": image.image_id, "phrase": k, "chosen": int(block[:, k].argmax()), "hit": box_hits[-1]})
            rank, at1, at5 = tie_aware_rank(block[k], k)
            ranks.append(rank), r1.append(at1), r5.append(at5)
    return {
        "box_accuracy": float(np.mean(box_hits)) if box_hits else float("nan"),
        "box_chance": float(np.mean([1 / len(i.phrases) for i in images if len(i.phrases) >= 2])) if box_hits else float("nan"),
        "phrase_r1": float(np.mean(r1)) if r1 else float("nan"),
        "phrase_r5": float(np.mean(r5)) if r5 else float("nan"),
        "phrase_mean_rank": float(np.mean(ranks)) if ranks else float("nan"),
    }, picks


def global_metrics(regions: torch.Tensor, texts: torch.Tensor, phrases: list[str]) -> dict:
    """Region -> phrase and phrase -> region retrieval over all regions; equal captions are one."""
    keys_ = np.array([phrase_key(p) for p in phrases])
    first = {}
    for index, key in enumerate(keys_.tolist()):
        first.setdefault(key, index)
    unique = np.array(sorted(first.values()))
    column_of = {key: position for position, key in enumerate(keys_[unique].tolist())}
    sims = (regions @ texts[unique].T).numpy()  # regions x distinct captions
    to_phrase = [tie_aware_rank(sims[row], column_of[key]) for row, key in enumerate(keys_.tolist())]
    # phrase -> region: each distinct caption's target is its first region; its other regions
    # (same caption elsewhere) are left out of its ranking.
    to_region = []
    for column, key in enumerate(keys_[unique].tolist()):
        keep = (keys_ != key) | (np.arange(len(keys_)) == first[key])
        scores = sims[keep, column]
        to_region.append(tie_aware_rank(scores, int(np.flatnonzero(np.flatnonzero(keep) == first[key])[0])))
    return {
        "region_to_phrase_r1": float(np.mean([r[1] for r in to_phrase])),
        "region_to_phrase_r5": float(np.mean([r[2] for r in to_phrase])),
        "phrase_to_region_r1": float(np.mean([r[1] for r in to_region])),
        "phrase_to_region_r5": float(np.mean([r[2] for r in to_region])),
    }


def classification_metrics(regions: torch.Tensor, class_texts: torch.Tensor, classes: list[str], labels: list[str]) -> dict:
    """Zero-shot top-1/top-5 over the regions that have a label among `classes`."""
    index = {name: i for i, name in enumerate(classes)}
    rows = [i for i, label in enumerate(labels) if label in index]
    if not rows or len(classes) < 2:
        return {"zero_shot_top1": float("nan"), "zero_shot_top5": float("nan"), "zero_shot_regions": len(rows)}
    sims = (regions[rows] @ class_texts.T).numpy()
    ranked = [tie_aware_rank(sims[n], index[labels[row]]) for n, row in enumerate(rows)]
    return {
        "zero_shot_top1": float(np.mean([r[1] for r in ranked])),
        "zero_shot_top5": float(np.mean([r[2] for r in ranked])),
        "zero_shot_regions": len(rows),
    }


def evaluate(model: RGBAClip, tokenizer, options: EvalOptions, device: torch.device, progress: Callable[[str], None] | None = None) -> EvalReport:
    check_methods(options.methods, EVAL_METHODS)
    model.eval()
    handler = CountingHandler("fc eval")
    images = load_eval_images(options, model.image_size, handler)
    phrases = [p for image in images for p in image.phrases]
    labels = [name for image in images for name in image.objects]
    classes = list(options.class_names) or sorted({name for name in labels if name})
    results, examples = {}, []
    with torch.no_grad():
        phrase_texts = MethodTexts(model, tokenizer, phrases, options.batch_size, device)
        class_bank = MethodTexts(model, tokenizer, [f"a photo of a {c}." for c in classes], options.batch_size, device) if classes else None
        for method in options.methods:
            if progress:
                progress(method)
            regions = region_features(method, model, images, options)
            texts = phrase_texts.of(METHODS[method])
            row, picks = image_metrics(regions, texts, images, options.iou_threshold)
            row.update(global_metrics(regions, texts, phrases))
            if class_bank is not None:
                row.update(classification_metrics(regions, class_bank.of(METHODS[method]), classes, labels))
            results[method] = row
            if method == "focus":
                examples = picks[: options.examples]
    by_id = {image.image_id: image for image in images}
    with_mask = sum(int((i.mask_alphas is not i.alphas) and (i.mask_alphas != i.alphas).any(axis=(1, 2)).sum()) for i in images)
    return EvalReport(
        images=len(images), regions=len(phrases), results=results, regions_with_mask=with_mask, examples=examples,
        skipped=dict(sorted(handler.counts.items())),
        example_images={e["image_id"]: by_id[e["image_id"]] for e in examples}, architecture=model.architecture,
    )
