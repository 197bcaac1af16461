"""How each method shows one region of an image to CLIP, and the batched image tower they share.

A method's score for (region, text) is the sum of its views' cosine similarities: ReCLIP's
isolated proposal scoring is crop + blur summed; every other method has one view. A view is one
model input per region, on the evaluated model ("trained") or on its base weights ("base": LoRA
off and the alpha conv zero, i.e. CLIP itself for a training run):

    alpha_box, alpha_mask, alpha_whole   trained; alpha = the region's box, its mask, all ones
    whole_image                          base; the image alone (ignores the region: chance in REC)
    crop, blur, grayscale, red_circle,   base; visual prompts (fctrain.prompts), blur at ReCLIP's radius
    red_outline
    crop_mask, blur_mask, grayscale_mask base; the same prompts with the region's mask instead of its
                                         box (Alpha-CLIP's baselines; blur_mask is FGVP's blur-reverse-
                                         mask): crop to the mask's box, blur / gray outside the mask
    falip                                base; FALIP's attention bias (fctrain.prompts.falip_bias)
    attention_bias                       base; this project's patch bias (fctrain.prompts.patch_bias)
    untrained                            the evaluated model on its base weights with the box alpha

Every view goes through the benchmark's geometry (fcdata.transforms: letterbox, squash or
alpha_clip_center_crop) with its alpha, so a box and its pixels never part. An image's views are built
together (blurs and gray copies once per image, in threads: PIL releases the GIL) and run through
the tower in batches grouped by weights.
"""

from __future__ import annotations

import copy
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from fcdata.errors import UserError
from fcdata.transforms import alpha_clip_center_crop, center_crop_box, letterbox, letterbox_boxes, normalize_alphas, normalize_images, squash
from fctrain.model import RGBAClip
from fctrain.prompts import IMAGE_PROMPTS, RECLIP_BLUR_RADIUS, attention_bias_features, falip_bias, patch_bias, prompt_background, visual_prompt

# Weights a view runs on: "trained" (the model, alpha in), "untrained" (the same path with LoRA and
# the mask module off) or "base" (plain CLIP's tower, with attention biases where the view has them).
VIEW_WEIGHTS = {
    "alpha_box": "trained", "alpha_mask": "trained", "alpha_whole": "trained", "untrained": "untrained",
    "whole_image": "base", "crop": "base", "blur": "base", "grayscale": "base", "red_circle": "base", "red_outline": "base",
    "crop_mask": "base", "blur_mask": "base", "grayscale_mask": "base", "falip": "base", "attention_bias": "base",
}
MASK_VIEWS = ("alpha_mask", "crop_mask", "blur_mask", "grayscale_mask")  # need Region.mask
_MASK_PROMPTS = {"crop_mask": "crop", "blur_mask": "blur", "grayscale_mask": "grayscale"}  # view -> its box prompt
# Every method of every benchmark -> the views whose scores it sums; one table, so a name means one
# thing wherever it is used. VG regions offers fctrain.config.EVAL_METHODS (its historical names:
# focus = alpha_box), REC and ImageNet-S offer BENCHMARK_METHODS.
METHODS: dict[str, tuple[str, ...]] = {
    "alpha_mask": ("alpha_mask",), "alpha_box": ("alpha_box",), "alpha_whole": ("alpha_whole",),
    "focus": ("alpha_box",), "focus_mask": ("alpha_mask",), "focus_whole": ("alpha_whole",), "untrained": ("untrained",),
    "whole_image": ("whole_image",), "crop": ("crop",), "blur": ("blur",), "crop_blur": ("crop", "blur"),
    "grayscale": ("grayscale",), "red_circle": ("red_circle",), "red_outline": ("red_outline",),
    "crop_mask": ("crop_mask",), "blur_mask": ("blur_mask",), "crop_blur_mask": ("crop_mask", "blur_mask"),
    "grayscale_mask": ("grayscale_mask",), "falip": ("falip",), "attention_bias": ("attention_bias",),
}
BENCHMARK_METHODS = ("alpha_mask", "alpha_box", "alpha_whole", "whole_image", "crop", "blur", "crop_blur", "grayscale",
                     "red_circle", "red_outline", "crop_mask", "blur_mask", "crop_blur_mask", "grayscale_mask", "falip")
METHOD_TITLES = {  # short: tables must fit an 80-column terminal
    "alpha_mask": "model, mask alpha", "alpha_box": "model, box alpha", "alpha_whole": "model, whole alpha",
    "focus": "Focus-CLIP (box)", "focus_mask": "Focus-CLIP (mask)", "focus_whole": "Focus-CLIP (whole)", "untrained": "untrained (=CLIP)",
    "focus_object_guided": "Obj-guided (box)", "focus_whole_object_guided": "Obj-guided (whole)",  # fc demo: a second model's rows
    "whole_image": "CLIP whole image", "crop": "CLIP crop", "blur": "CLIP blur outside", "crop_blur": "CLIP crop+blur",
    "grayscale": "CLIP gray outside", "red_circle": "CLIP red circle", "red_outline": "CLIP red box",
    "crop_mask": "CLIP crop (mask)", "blur_mask": "CLIP blur (mask)", "crop_blur_mask": "CLIP crop+blur mask",
    "grayscale_mask": "CLIP gray (mask)", "falip": "CLIP FALIP", "attention_bias": "CLIP attn bias",
}
_SHARED_VIEWS = ("whole_image", "alpha_whole")  # one input per image, whatever the region


@contextmanager
def base_weights(model: RGBAClip) -> Iterator[None]:
    """The model as it was before training: LoRA adapters off, its mask module off (the alpha conv
    zero, or object_guided's zero projection: = plain CLIP, either architecture)."""
    adapters = model.peft_model.disable_adapter() if model.peft_model is not None else nullcontext()
    with model.mask_off(), adapters:
        yield


class MethodTexts:
    """Text features of `texts` for each method: with the trained model's text tower where the
    method's views run on the trained weights, with CLIP's own (adapters off) where they run on
    "untrained" or "base" ones, so a baseline stays CLIP's on both sides. One set where the text
    tower has no adapters (lora.text_targets empty), as it is then the same tower."""

    def __init__(self, model: RGBAClip, tokenizer, texts: list[str], batch_size: int, device):
        from fctrain.evaluation.scoring import text_features

        self.trained = text_features(model, tokenizer, texts, batch_size, device)
        self.base = self.trained
        if model.has_text_adapters:
            with base_weights(model):
                self.base = text_features(model, tokenizer, texts, batch_size, device)

    def of(self, views: tuple[str, ...]) -> torch.Tensor:
        """The features for a method that sums `views` (all on one kind of weights)."""
        return self.trained if VIEW_WEIGHTS[views[0]] == "trained" else self.base

    def minus_mean_of(self, bank: "MethodTexts") -> "MethodTexts":
        """These features less the mean of `bank`'s, tower by tower (ReCLIP's subtraction)."""
        out = copy.copy(self)
        out.trained = self.trained - bank.trained.mean(0)
        out.base = out.trained if self.base is self.trained else self.base - bank.base.mean(0)
        return out


def views_of(methods: tuple[str, ...]) -> tuple[str, ...]:
    """The distinct views the methods sum, in first-use order."""
    return tuple(dict.fromkeys(v for m in methods for v in METHODS[m]))


def needs_masks(method: str) -> bool:
    return any(v in MASK_VIEWS for v in METHODS[method])


def check_methods(methods: tuple[str, ...], known: tuple[str, ...] = BENCHMARK_METHODS) -> None:
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise UserError(f"unknown method {unknown[0]!r}; known here: {', '.join(known)}")
    if not methods:
        raise UserError("no methods to evaluate")


# ----------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class Geometry:
    """An evaluation view (fcdata.transforms) and where it moves a box."""

    name: str
    apply: Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]

    def map_boxes(self, boxes: np.ndarray, width: int, height: int, size: int) -> np.ndarray:
        """K x 4 (x0, y0, x1, y1) image pixels -> model-input pixels, clipped to the input."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        if self.name == "squash":
            scale = np.array([size / width, size / height] * 2)
            return np.clip(boxes * scale, 0, size)
        if self.name == "letterbox":
            return np.clip(letterbox_boxes(boxes, width, height, size), 0, size)
        left, top, right, _ = center_crop_box(width, height)
        return np.clip((boxes - np.array([left, top] * 2)) * size / (right - left), 0, size)


GEOMETRIES = {"letterbox": Geometry("letterbox", letterbox), "squash": Geometry("squash", squash),
              "center_crop": Geometry("center_crop", alpha_clip_center_crop)}


# ----------------------------------------------------------------------------- views


@dataclass
class Region:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in image pixels
    mask: np.ndarray | None = None  # H x W uint8 (0 / 255), or None where the benchmark has none


@dataclass
class ViewInputs:
    pictures: np.ndarray  # N x S x S x 3 uint8
    alphas: np.ndarray  # N x S x S uint8
    biases: np.ndarray | None  # N x (1 + g*g) float32 class-row attention biases (falip), else None


def pixel_box(box, width: int, height: int) -> tuple[int, int, int, int]:
    """Integer box inside the image, at least one pixel (PIL rounds float crops the same way)."""
    x0, y0 = min(max(round(box[0]), 0), width - 1), min(max(round(box[1]), 0), height - 1)
    return x0, y0, max(min(round(box[2]), width), x0 + 1), max(min(round(box[3]), height), y0 + 1)


@dataclass(frozen=True)
class PromptSettings:
    """The knobs of the training-free prompts, fixed per benchmark."""

    blur_radius: float | None = RECLIP_BLUR_RADIUS  # blur's Gaussian radius; None = 2% of the long side (VG regions)
    attention_strength: float = 0.2  # attention_bias's peak logit bias


def build_views(image: np.ndarray, regions: list[Region], view: str, geometry: Geometry, size: int, grid: int,
                settings: PromptSettings = PromptSettings()) -> ViewInputs:
    """The model inputs of `view` for each region of one image (one input for shared views)."""
    from PIL import Image

    height, width = image.shape[:2]
    boxes = [pixel_box(r.box, width, height) for r in regions]
    ones = np.full((1, height, width), 255, np.uint8)
    no_alpha = np.zeros((len(regions), size, size), np.uint8)  # base views ignore it
    if view in _SHARED_VIEWS:
        picture, alpha = geometry.apply(image, ones, size)
        return ViewInputs(picture[None], alpha, None)
    if view in MASK_VIEWS and any(r.mask is None for r in regions):
        raise UserError(f"{view} needs segmentation masks, which these proposals do not have")
    if view in ("alpha_box", "alpha_mask", "untrained"):
        masks = np.zeros((len(regions), height, width), np.uint8)
        for k, (region, (x0, y0, x1, y1)) in enumerate(zip(regions, boxes)):
            if view == "alpha_mask":
                masks[k] = region.mask
            else:
                masks[k, y0:y1, x0:x1] = 255
        picture, alpha = geometry.apply(image, masks, size)
        return ViewInputs(np.repeat(picture[None], len(regions), 0), alpha, None)
    if view in ("falip", "attention_bias"):
        picture, _ = geometry.apply(image, ones[:0], size)
        model_boxes = geometry.map_boxes(np.array([r.box for r in regions]), width, height, size)
        if view == "falip":
            biases = falip_bias(model_boxes, grid, size)
        else:
            biases = patch_bias(model_boxes, grid, size, settings.attention_strength)
        return ViewInputs(np.repeat(picture[None], len(regions), 0), no_alpha, biases.numpy())
    prompt = _MASK_PROMPTS.get(view, view)
    if prompt not in IMAGE_PROMPTS:
        raise UserError(f"unknown view {view!r}; known: {', '.join(VIEW_WEIGHTS)}")
    pil = Image.fromarray(image)
    background = prompt_background(prompt, pil, settings.blur_radius)  # one blur / gray copy per image, not per box
    pictures = []
    for region, box in zip(regions, boxes):
        if view == "crop_mask":
            shown = np.asarray(visual_prompt("crop", pil, mask_box(region.mask, box)))
        elif view in _MASK_PROMPTS:
            shown = outside_mask(image, np.asarray(background), region.mask)
        else:
            shown = np.asarray(visual_prompt(view, pil, box, settings.blur_radius, background))
        pictures.append(geometry.apply(np.ascontiguousarray(shown), ones[:0], size)[0])
    return ViewInputs(np.stack(pictures), no_alpha, None)


def mask_box(mask: np.ndarray, box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """The bounding box (x0, y0, x1, y1, exclusive) of a mask's pixels; `box` for an empty mask."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return box
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def outside_mask(image: np.ndarray, background: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image inside the mask and `background` outside, blended by a graded mask's weight (a
    0/255 mask gives exactly one or the other, as the box prompts paste their box)."""
    weight = mask[..., None].astype(np.float32) / 255
    return (image * weight + background * (1 - weight)).round().astype(np.uint8)


# ----------------------------------------------------------------------------- the tower


@dataclass
class BuiltViews:
    jobs: list[tuple[int, str]]  # (item index, view) per entry of `inputs`
    inputs: list[ViewInputs]
    region_counts: list[int]  # regions per item (shared views are broadcast to them)


class Tower:
    """Runs views through the model in batches: `trained` views with their alpha, `untrained` ones
    the same way on the base weights, `base` views through plain CLIP's tower with their attention
    biases (zero elsewhere), all in float on `device`."""

    def __init__(self, model: RGBAClip, batch_size: int, workers: int = 0, settings: PromptSettings = PromptSettings()):
        self.model = model.eval()
        self.batch_size = batch_size
        self.settings = settings
        self.device = model.logit_scale.device
        self.size = model.image_size
        config = model.base_clip.config.vision_config
        self.grid = self.size // config.patch_size
        self.pool = ThreadPoolExecutor(workers or len(os.sched_getaffinity(0)))

    def encode_images(self, items: list[tuple[np.ndarray, list[Region]]], views: tuple[str, ...], geometry: Geometry) -> list[dict[str, torch.Tensor]]:
        """For each (image, regions): view -> K x D unit features (CPU float32), every view of
        every image in `items` in as few forward passes as the batch size allows."""
        return self.run(self.build(items, views, geometry))

    def build(self, items: list[tuple[np.ndarray, list[Region]]], views: tuple[str, ...], geometry: Geometry) -> BuiltViews:
        """The CPU half of encode_images (views built in the thread pool); safe to run in a
        background thread while `run` keeps the model busy with the previous items."""
        jobs = [(i, view) for i in range(len(items)) for view in views]
        inputs = list(self.pool.map(lambda job: build_views(*items[job[0]], job[1], geometry, self.size, self.grid, self.settings), jobs))
        return BuiltViews(jobs, inputs, [len(regions) for _, regions in items])

    def run(self, built: BuiltViews) -> list[dict[str, torch.Tensor]]:
        """The model half of encode_images: features grouped back by item and view."""
        out: list[dict[str, torch.Tensor]] = [{} for _ in built.region_counts]
        for weights in ("trained", "untrained", "base"):
            chosen = [(job, inputs) for job, inputs in zip(built.jobs, built.inputs) if VIEW_WEIGHTS[job[1]] == weights]
            if not chosen:
                continue
            features = self._run(weights, [inputs for _, inputs in chosen])
            start = 0
            for (index, view), inputs in chosen:
                rows = features[start : start + len(inputs.pictures)]
                start += len(inputs.pictures)
                out[index][view] = rows.expand(built.region_counts[index], -1) if view in _SHARED_VIEWS else rows
        return out

    def _run(self, weights: str, inputs: list[ViewInputs]) -> torch.Tensor:
        pictures = np.concatenate([i.pictures for i in inputs])
        alphas = np.concatenate([i.alphas for i in inputs])
        biases = None
        if any(i.biases is not None for i in inputs):
            length = 1 + self.grid * self.grid
            biases = np.concatenate([i.biases if i.biases is not None else np.zeros((len(i.pictures), length), np.float32) for i in inputs])
        rows = []
        with torch.inference_mode(), (nullcontext() if weights == "trained" else base_weights(self.model)):
            for start in range(0, len(pictures), self.batch_size):
                stop = start + self.batch_size
                pixels = normalize_images(torch.from_numpy(pictures[start:stop]).to(self.device).permute(0, 3, 1, 2))
                if weights != "base":
                    alpha = normalize_alphas(torch.from_numpy(alphas[start:stop]).to(self.device)[:, None])
                    rows.append(self.model.encode_image(pixels, alpha).float())
                else:
                    bias = None if biases is None else torch.from_numpy(biases[start:stop])
                    rows.append(attention_bias_features(self.model.base_clip, pixels, bias).float())
        return F.normalize(torch.cat(rows), dim=-1).cpu()

    def close(self) -> None:
        self.pool.shutdown()
