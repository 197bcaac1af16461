"""Training-free ways to make plain CLIP look at a region: the bar a trained region model must clear.

Image-space visual prompts (on the stored image, before the letterbox to the model's size):
- whole_image: nothing: the region is ignored (chance among one image's regions).
- crop: the box alone.
- blur: everything outside the box Gaussian-blurred (ReCLIP).
- grayscale: everything outside the box in gray.
- red_outline: a red rectangle drawn around the box (Shtedritski et al. draw circles; a box is
  what Visual Genome gives).
- red_circle: a red ellipse inscribed in the box, line width max(W, H) / 200 (Shtedritski et al.;
  FALIP's code). Not the blur-outside-an-ellipse that FALIP's fork runs under the name "circle".
Attention-space prompt:
- attention_bias: a positive bias on the attention logits of the class-token query for the patch
  tokens inside the box, Gaussian over the box (peak `strength`), in the last third of the vision
  blocks (FALIP: 0.2 in the last 4 of ViT-B/16's 12). `patch_bias` is this project's variant
  (Gaussian with sigma half the box, inside the box's patch centres); `falip_bias` follows FALIP's
  code (every token the box touches, a near-flat Gaussian min-max normalised to [0, strength]).
"""

from __future__ import annotations

import math

import numpy as np
import torch

IMAGE_PROMPTS = ("whole_image", "crop", "blur", "grayscale", "red_outline", "red_circle")
RECLIP_BLUR_RADIUS = 100  # ReCLIP's (and FALIP's) --blur_std_dev default, in image pixels


def prompt_background(method: str, image, blur_radius: float | None = None):
    """What "blur" / "grayscale" show outside the box: the whole image blurred (radius
    `blur_radius`; None = 2% of the long side, the VG-regions default) or gray. Computed once per
    image and passed to visual_prompt for each of its boxes; None for the other prompts."""
    from PIL import ImageFilter

    if method == "blur":
        radius = max(2.0, 0.02 * max(image.size)) if blur_radius is None else blur_radius
        return image.filter(ImageFilter.GaussianBlur(radius=radius))
    if method == "grayscale":
        return image.convert("L").convert("RGB")
    return None


def visual_prompt(method: str, image, box, blur_radius: float | None = None, background=None) -> "Image.Image":  # noqa: F821 - PIL imported lazily
    """The stored image (PIL, RGB) as `method` shows region `box` (x0, y0, x1, y1 ints) to CLIP.
    `background`: prompt_background(method, image, blur_radius), when the caller has it already."""
    from PIL import ImageDraw

    x0, y0, x1, y1 = (int(v) for v in box)
    if method == "whole_image":
        return image
    if method == "crop":
        return image.crop((x0, y0, x1, y1))
    if method in ("blur", "grayscale"):
        outside = (background if background is not None else prompt_background(method, image, blur_radius)).copy()
        outside.paste(image.crop((x0, y0, x1, y1)), (x0, y0))
        return outside
    if method == "red_outline":
        outlined = image.copy()
        width = max(2, round(0.01 * max(image.size)))
        ImageDraw.Draw(outlined).rectangle((x0, y0, x1 - 1, y1 - 1), outline=(255, 0, 0), width=width)
        return outlined
    if method == "red_circle":
        circled = image.copy()
        # The ellipse inscribed in the box, as FALIP's code draws Shtedritski et al.'s marker.
        width = max(1, int(max(image.size) / 200))
        ImageDraw.Draw(circled).ellipse((x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)), outline=(255, 0, 0), width=width)
        return circled
    raise ValueError(f"unknown visual prompt {method!r}; known: {', '.join(IMAGE_PROMPTS)}")


def patch_bias(boxes: np.ndarray, grid: int, size: int, strength: float) -> torch.Tensor:
    """B x (1 + grid^2) additive biases for the class-token row: `strength` times a Gaussian
    centred on each box (sigma half the box side per axis), zero outside the box and for the class
    token itself. boxes: B x 4 in model-input pixels (after the letterbox)."""
    centres = (np.arange(grid) + 0.5) * size / grid
    biases = np.zeros((len(boxes), 1 + grid * grid), np.float32)
    for row, (x0, y0, x1, y1) in enumerate(boxes):
        sigma_x, sigma_y = max((x1 - x0) / 2, 1e-3), max((y1 - y0) / 2, 1e-3)
        wx = np.exp(-0.5 * ((centres - (x0 + x1) / 2) / sigma_x) ** 2) * ((centres >= x0) & (centres < x1))
        wy = np.exp(-0.5 * ((centres - (y0 + y1) / 2) / sigma_y) ** 2) * ((centres >= y0) & (centres < y1))
        biases[row, 1:] = strength * np.outer(wy, wx).ravel()
    return torch.from_numpy(biases)


def falip_bias(boxes: np.ndarray, grid: int, size: int, strength: float = 0.2, sigma: float = 100.0) -> torch.Tensor:
    """B x (1 + grid^2) class-row biases as FALIP's code builds them. boxes: B x 4 (x0, y0, x1,
    y1) in model-input pixels. Every token the box touches gets a weight: a Gaussian over the
    box's token rectangle (sigma in tokens, 100: nearly flat), min-max normalised to [0, strength]
    (so the corners get ~0 and the centre `strength`; a one-token box gets `strength`)."""
    patch = size / grid
    biases = np.zeros((len(boxes), 1 + grid * grid), np.float32)
    for row, box in enumerate(np.clip(np.asarray(boxes, np.float64), 0, size)):
        # Token index of a coordinate: ceil(v / patch) - 1, at least 0 (FALIP's rule), so an edge on a
        # patch boundary does not touch the next patch.
        first_col, last_col, first_row, last_row = (max(math.ceil(v / patch), 1) - 1 for v in box[[0, 2, 1, 3]])
        last_col, last_row = min(last_col, grid - 1), min(last_row, grid - 1)
        ys, xs = np.arange(last_row - first_row + 1, dtype=np.float64), np.arange(last_col - first_col + 1, dtype=np.float64)
        distance = np.hypot(*np.meshgrid(ys - ys[-1] / 2, xs - xs[-1] / 2, indexing="ij"))
        weight = np.exp(-0.5 * (distance / sigma) ** 2)
        weight = (weight - weight.min() + 1e-6) / (weight.max() - weight.min() + 1e-6) * strength
        tokens = biases[row, 1:].reshape(grid, grid)  # a view: rows are y, columns x
        tokens[first_row : last_row + 1, first_col : last_col + 1] = weight
    return torch.from_numpy(biases)


def attention_bias_features(clip, pixel_values: torch.Tensor, class_row_bias: torch.Tensor | None, last_fraction: float = 1 / 3) -> torch.Tensor:
    """Plain CLIP image features with `class_row_bias` (B x L, see patch_bias) added to the class
    token's attention logits in the last `last_fraction` of the vision blocks (None: plain CLIP).
    B x D, projected."""
    vision = clip.vision_model
    embeddings = vision.embeddings(pixel_values.to(vision.embeddings.patch_embedding.weight.dtype))
    hidden = vision.pre_layrnorm(embeddings)
    layers = vision.encoder.layers
    first_biased = len(layers) - max(1, round(last_fraction * len(layers)))
    length = hidden.shape[1]
    mask = None
    if class_row_bias is not None:
        mask = torch.zeros(hidden.shape[0], 1, length, length, dtype=hidden.dtype, device=hidden.device)
        mask[:, 0, 0, :] = class_row_bias.to(hidden.device, hidden.dtype)  # only the class-token query row
    for index, layer in enumerate(layers):
        hidden = layer(hidden, mask if index >= first_biased else None)
    return clip.visual_projection(vision.post_layernorm(hidden[:, 0]))
