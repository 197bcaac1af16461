"""The two whole-image geometries: letterbox (pad, keep everything) and center_crop (CLIP's resize +
centre square). Images and masks must always come out aligned."""

import numpy as np
import pytest
from PIL import Image

from fcdata.transforms import center_crop, letterbox

TRANSFORMS = [letterbox, center_crop]


def scene(height: int, width: int):
    """A gray image with a red box, the box's binary mask, and a mask of the image's left tenth."""
    image = np.full((height, width, 3), 128, np.uint8)
    box = np.zeros((height, width), np.uint8)
    top, left = height // 3, width // 2
    box[top : top + height // 3, left : left + width // 5] = 255
    image[box > 0] = (255, 0, 0)
    edge = np.zeros((height, width), np.uint8)
    edge[:, : width // 10] = 255
    return image, np.stack([box, edge])


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("height, width", [(300, 400), (400, 300), (97, 241)])
def test_image_and_masks_stay_aligned(transform, height, width):
    """Where a mask is solidly on, the image shows the red box it was drawn from (one geometry for both)."""
    image, masks = scene(height, width)
    out, out_masks = transform(image, masks, 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert out_masks.shape == (2, 64, 64) and out_masks.dtype == np.uint8
    inside = out_masks[0] == 255
    assert inside.sum() > 10
    red = out[inside].astype(int)
    assert (red[:, 0] > 200).all() and (red[:, 1:] < 60).all()


def test_center_crop_uses_clips_sizes_and_offsets():
    """Shorter side to size, longer side int(size * long / short), crop at round((new - size) / 2): as torchvision's Resize + CenterCrop."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (300, 401, 3), dtype=np.uint8)
    out, _ = center_crop(image, np.zeros((0, 300, 401), np.uint8), 224)
    resized = Image.fromarray(image).resize((int(224 * 401 / 300), 224), Image.Resampling.BICUBIC)  # 299 x 224
    left = int(round((299 - 224) / 2))  # 38 (round half to even, as torchvision)
    assert np.array_equal(out, np.asarray(resized)[:, left : left + 224])
    tall, _ = center_crop(image.transpose(1, 0, 2).copy(), np.zeros((0, 401, 300), np.uint8), 224)
    # The same geometry for a tall image. PIL filters rows, then columns (rounding to uint8 between),
    # so a few noise pixels differ; a crop one pixel off would differ by ~85 levels on average.
    assert np.abs(tall.astype(int) - out.transpose(1, 0, 2)).mean() < 1


def test_center_crop_cuts_the_sides_letterbox_keeps_them():
    """A region on a wide image's left tenth is cut away by center_crop and kept (scaled) by letterbox."""
    image, masks = scene(300, 400)
    _, cropped = center_crop(image, masks, 64)
    _, padded = letterbox(image, masks, 64)
    assert cropped[1].max() == 0
    assert padded[1].mean() / 255 == pytest.approx(0.1 * 300 / 400, rel=0.05)  # its area share of the padded square


def test_center_crop_masks_keep_their_area_without_ringing():
    """Binary masks shrink by averaging (bilinear): area kept to 2%, values graded only at the edges, none overshoot."""
    mask = np.zeros((1, 480, 640), np.uint8)
    mask[0, 100:400, 200:500] = 255
    _, out = center_crop(np.zeros((480, 640, 3), np.uint8), mask, 96)  # 128 x 96, then the centre 96 x 96
    left = (128 - 96) // 2 * 640 / 128  # the crop's left edge in source pixels
    kept = mask[0, :, int(left) : int(left) + 480]
    assert out.mean() == pytest.approx(kept.mean(), rel=0.02)
    inner = out[0, 25:75, 30:65]  # well inside the box
    assert (inner == 255).all() and (out[0, :15] == 0).all()
    graded = (out > 0) & (out < 255)
    assert graded.sum() < 0.15 * (out > 0).sum()


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_a_square_image_at_the_model_size_is_unchanged(transform):
    """No padding, no resize, no crop: both geometries are the identity there."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    masks = rng.integers(0, 256, (2, 64, 64), dtype=np.uint8)
    out, out_masks = transform(image, masks, 64)
    assert np.array_equal(out, image) and np.array_equal(out_masks, masks)
