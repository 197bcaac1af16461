"""Training-free ways to make plain CLIP look at a region: the bar a trained region model must clear.

Image-space visual prompts (on the stored image, before the letterbox to the model's size):
- whole_image: nothing: the region is ignored (chance among one image's regions).
- crop: the box alone.
- blur: everything outside the box Gaussian-blurred (ReCLIP).
- grayscale: everything outside the box in gray.
- red_outline: a red rectangle drawn around the box (Shtedritski et al. draw circles; a box is
  what Visual Genome gives).
Attention-space prompt:
- attention_bias: a positive bias on the attention logits of the class-token query for the patch
  tokens inside the box, Gaussian over the box (peak `strength`), in the last third of the vision
  blocks (FALIP: 0.2 in the last 4 of ViT-B/16's 12).
"""

from __future__ import annotations

import numpy as np
import torch

IMAGE_PROMPTS = ("whole_image", "crop", "blur", "grayscale", "red_outline")


def visual_prompt(method: str, image, box) -> "Image.Image":  # noqa: F821 - PIL imported lazily
    """The stored image (PIL, RGB) as `method` shows region `box` (x0, y0, x1, y1 ints) to CLIP."""
    from PIL import Image, ImageDraw, ImageFilter

    x0, y0, x1, y1 = (int(v) for v in box)
    if method == "whole_image":
        return image
    if method == "crop":
        return image.crop((x0, y0, x1, y1))
    if method in ("blur", "grayscale"):
        if method == "blur":
            outside = image.filter(ImageFilter.GaussianBlur(radius=max(2.0, 0.02 * max(image.size))))
        else:
            outside = image.convert("L").convert("RGB")
        outside.paste(image.crop((x0, y0, x1, y1)), (x0, y0))
        return outside
    if method == "red_outline":
        outlined = image.copy()
        width = max(2, round(0.01 * max(image.size)))
        ImageDraw.Draw(outlined).rectangle((x0, y0, x1 - 1, y1 - 1), outline=(255, 0, 0), width=width)
        return outlined
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


def attention_bias_features(clip, pixel_values: torch.Tensor, class_row_bias: torch.Tensor, last_fraction: float = 1 / 3) -> torch.Tensor:
    """Plain CLIP image features with `class_row_bias` (B x L, see patch_bias) added to the class
    token's attention logits in the last `last_fraction` of the vision blocks. B x D, projected."""
    vision = clip.vision_model
    embeddings = vision.embeddings(pixel_values.to(vision.embeddings.patch_embedding.weight.dtype))
    hidden = vision.pre_layrnorm(embeddings)
    layers = vision.encoder.layers
    first_biased = len(layers) - max(1, round(last_fraction * len(layers)))
    length = hidden.shape[1]
    mask = torch.zeros(hidden.shape[0], 1, length, length, dtype=hidden.dtype, device=hidden.device)
    mask[:, 0, 0, :] = class_row_bias.to(hidden.device, hidden.dtype)  # only the class-token query row
    for index, layer in enumerate(layers):
        hidden = layer(hidden, mask if index >= first_biased else None)
    return clip.visual_projection(vision.post_layernorm(hidden[:, 0]))
