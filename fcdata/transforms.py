"""Geometry shared by training, evaluation and inference, and the normalisation of model inputs.

Images and masks always move together: every function here takes both and applies one geometry.
Workers produce uint8; `normalize_images` / `normalize_alphas` turn uint8 tensors into model
inputs (on the GPU in training, see fcdata.loader).
"""

from __future__ import annotations

import functools

import numpy as np

# OpenAI CLIP's pixel statistics (RGB, on [0, 1]).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# Alpha-CLIP's: a mask in [0, 1] becomes (alpha - 0.5) / 0.26, so all-ones is ~1.923.
ALPHA_MEAN = 0.5
ALPHA_STD = 0.26


def letterbox_placement(width: int, height: int) -> tuple[int, int, int]:
    """(side, left, top) of the letterbox: the square's side and where the image sits in it
    (centred, offsets rounded down). The one definition every letterboxed view uses."""
    side = max(width, height)
    return side, (side - width) // 2, (side - height) // 2


def letterbox_boxes(boxes: np.ndarray, width: int, height: int, size: int) -> np.ndarray:
    """K x 4 (x0, y0, x1, y1) image pixels -> pixels of the size x size letterboxed view."""
    side, left, top = letterbox_placement(width, height)
    shift = np.array([left, top] * 2, np.float64)
    return (np.asarray(boxes, np.float64).reshape(-1, 4) + shift) * size / side


def letterbox(image: np.ndarray, alphas: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad to a square (zeros, image centred), then resize to size x size: the evaluation and
    inference view, which never cuts a region away (a shard sample's: fcdata.augment.eval_view).

    image: H x W x 3 uint8; alphas: K x H x W uint8 -> (size x size x 3, K x size x size).
    """
    from PIL import Image

    height, width = image.shape[:2]
    side, left, top = letterbox_placement(width, height)
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
    mean, std = _clip_statistics(images.device)
    return (images.float() - mean) / std


@functools.lru_cache(maxsize=None)
def _clip_statistics(device):
    """CLIP's mean and std x 255 as 3 x 1 x 1 tensors on `device`, made once per device: making
    them per batch would copy them from pageable memory, which makes the host wait for the GPU."""
    import torch

    mean = torch.tensor(CLIP_MEAN, device=device).view(3, 1, 1) * 255.0
    std = torch.tensor(CLIP_STD, device=device).view(3, 1, 1) * 255.0
    return mean, std


def normalize_alphas(alphas):
    """uint8 tensor ... x 1 x H x W (0..255) -> float32 (alpha / 255 - 0.5) / 0.26."""
    return (alphas.float() / 255.0 - ALPHA_MEAN) / ALPHA_STD


def _resize_together(image: np.ndarray, alphas: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize the image (bicubic, OpenAI CLIP's filter) and every alpha (bilinear, Alpha-CLIP's
    mask transform) to size x size. PIL antialiases when shrinking, as torchvision >= 0.17 does."""
    from PIL import Image

    resized = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC))
    out_alphas = np.empty((alphas.shape[0], size, size), np.uint8)
    for k, alpha in enumerate(alphas):
        out_alphas[k] = np.asarray(Image.fromarray(alpha).resize((size, size), Image.Resampling.BILINEAR))
    return resized, out_alphas


def center_crop_box(width: int, height: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the centred square on the short side, Alpha-CLIP's offsets."""
    side = min(width, height)
    left, top = width // 2 - side // 2, height // 2 - side // 2
    return left, top, left + side, top + side


def alpha_clip_center_crop(image: np.ndarray, alphas: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The centred square on the short side, resized to size x size: Alpha-CLIP's ImageNet-S view
    (crop first, then resize, as its harness does; `center_crop` resizes first, as OpenAI's
    preprocessing does, which differs by a sub-pixel shift of the offset). Parts of a long image
    are cut away.

    image: H x W x 3 uint8; alphas: K x H x W uint8 -> (size x size x 3, K x size x size).
    """
    left, top, right, bottom = center_crop_box(image.shape[1], image.shape[0])
    return _resize_together(
        np.ascontiguousarray(image[top:bottom, left:right]), np.ascontiguousarray(alphas[:, top:bottom, left:right]), size
    )


def squash(image: np.ndarray, alphas: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize to size x size ignoring the aspect ratio: ReCLIP's REC view (its `square_size`
    default), so no proposal is cut away and a crop fills the input.

    image: H x W x 3 uint8; alphas: K x H x W uint8 -> (size x size x 3, K x size x size).
    """
    return _resize_together(image, alphas, size)
