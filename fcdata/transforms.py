"""Geometry shared by training, evaluation and inference, and the normalisation of model inputs.

Images and masks always move together: every function here takes both and applies one geometry.
Workers produce uint8; `normalize_images` / `normalize_alphas` turn uint8 tensors into model
inputs (on the GPU in training, see fcdata.loader).
"""

from __future__ import annotations

import numpy as np

# OpenAI CLIP's pixel statistics (RGB, on [0, 1]).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# Alpha-CLIP's: a mask in [0, 1] becomes (alpha - 0.5) / 0.26, so all-ones is ~1.923.
ALPHA_MEAN = 0.5
ALPHA_STD = 0.26


def letterbox(image: np.ndarray, alphas: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad to a square (zeros, image centred), then resize to size x size: the evaluation and
    inference view, which never cuts a region away.

    image: H x W x 3 uint8; alphas: K x H x W uint8 -> (size x size x 3, K x size x size).
    """
    from PIL import Image

    height, width = image.shape[:2]
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    square = np.zeros((side, side, 3), np.uint8)
    square[top : top + height, left : left + width] = image
    resized = np.asarray(Image.fromarray(square).resize((size, size), Image.Resampling.BILINEAR))
    out_alphas = np.empty((alphas.shape[0], size, size), np.uint8)
    for k, alpha in enumerate(alphas):
        padded = np.zeros((side, side), np.uint8)
        padded[top : top + height, left : left + width] = alpha
        out_alphas[k] = np.asarray(Image.fromarray(padded).resize((size, size), Image.Resampling.BILINEAR))
    return resized, out_alphas


def center_crop(image: np.ndarray, alphas: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """OpenAI CLIP's preprocessing: resize the shorter side to `size` (bicubic, the longer side
    scaled alike and rounded down), then cut the centred size x size square. Whole-image
    embeddings then match open_clip's/OpenAI's; a region outside the centre square is cut away
    (`letterbox` keeps it).

    Masks take the same geometry but are resized bilinearly (PIL widens the filter when it shrinks,
    so it averages): a binary mask keeps its area and becomes graded only along its edges, where
    bicubic would ring (overshoot into halos and dips that clip at 0 and 255).

    image: H x W x 3 uint8; alphas: K x H x W uint8 -> (size x size x 3, K x size x size).
    """
    from PIL import Image

    height, width = image.shape[:2]
    # Sizes and offsets as torchvision's Resize(size) then CenterCrop(size), CLIP's preprocess.
    new_w, new_h = (size, int(size * height / width)) if width <= height else (int(size * width / height), size)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    box = (left, top, left + size, top + size)
    cropped = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BICUBIC).crop(box))
    out_alphas = np.empty((alphas.shape[0], size, size), np.uint8)
    for k, alpha in enumerate(alphas):
        out_alphas[k] = np.asarray(Image.fromarray(alpha).resize((new_w, new_h), Image.Resampling.BILINEAR).crop(box))
    return cropped, out_alphas


def normalize_images(images):
    """uint8 tensor ... x 3 x H x W -> float32 CLIP-normalised (same device)."""
    import torch

    mean = torch.tensor(CLIP_MEAN, device=images.device).view(3, 1, 1) * 255.0
    std = torch.tensor(CLIP_STD, device=images.device).view(3, 1, 1) * 255.0
    return (images.float() - mean) / std


def normalize_alphas(alphas):
    """uint8 tensor ... x 1 x H x W (0..255) -> float32 (alpha / 255 - 0.5) / 0.26."""
    return (alphas.float() / 255.0 - ALPHA_MEAN) / ALPHA_STD
