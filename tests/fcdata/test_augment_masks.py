"""Real masks in the loader: the same operator as box profiles, min_visible on mask pixels."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from fcdata import augment, keys, masks, reader
from fcdata.options import LoaderOptions
from tests.fcdata.test_segmasks import make_sample


def test_weights_equal_the_profile_resampler():
    """weights @ profile is resample_profile, inside and beyond the image, up- and downscaling."""
    rng = np.random.default_rng(0)
    profile = (rng.random(90) * 255).astype(np.uint8)
    for start, span, size in ((10.3, 50.7, 224), (-20.0, 130.0, 64), (0.0, 90.0, 13)):
        reference = augment.resample_profile(profile, start, span, size)
        weights = augment.resample_weights(start, span, size, 0, 90)
        np.testing.assert_allclose(weights @ profile.astype(np.float32), reference, atol=1e-3 * 255)


@pytest.mark.parametrize("flip", [False, True])
def test_a_box_shaped_real_mask_gives_the_box_alpha(flip):
    """The same crop and flip of a box stored as a real mask and as profiles: alphas within one
    level of 255 (only the rounding order differs)."""
    height, width = 60, 80
    box = np.array([[13.0, 7.0, 51.0, 44.0]])
    rows, cols = masks.box_profiles(box.astype(np.float32), height, width, 0.0)
    crop_box = np.array([5.5, 3.25, 70.0, 58.0])
    profile_alpha = augment.profile_alphas(rows, cols, np.array([0]), crop_box, 32, flip)[0]
    full = masks.profiles_to_masks(rows, cols, np.array([0]))[0]
    x0, y0, x1, y1 = 13, 7, 51, 44
    real_alpha = augment.mask_alpha(full[y0:y1, x0:x1], [x0, y0, x1, y1], crop_box, 32, flip)
    assert np.abs(real_alpha.astype(int) - profile_alpha.astype(int)).max() <= 1
    assert real_alpha.max() == 255 and real_alpha.min() == 0


def test_visible_share_counts_mask_pixels_not_box_area():
    """A mask filling only the left quarter of its box: a crop keeping the box's left half keeps
    all of the mask (box share 0.5, mask share 1)."""
    crop = np.zeros((40, 40), np.uint8)
    crop[:, :10] = 255
    real = augment.RealMasks({0: (crop, [0, 0, 40, 40])})
    regions = augment.SampleRegions(40, 40, 1, np.array([[0.0, 0.0, 40.0, 40.0]]), ["a"], [1], [0], -1)
    half = np.array([0.0, 0.0, 20.0, 40.0])
    assert augment.visible_fractions(regions.boxes, np.array([0]), half)[0] == pytest.approx(0.5)
    assert augment.visible_shares(regions, np.array([0]), half, real)[0] == pytest.approx(1.0)
    right = np.array([9.0, 0.0, 40.0, 40.0])  # keeps mask column 9 only: pixel centres 9.5..
    assert augment.visible_shares(regions, np.array([0]), right, real)[0] == pytest.approx(0.1)


def test_views_of_a_runs_sample_use_the_real_masks(monkeypatch):
    """train_views and eval_view on a runs-v1 sample: the masked region's alpha is its mask through the view's
    geometry (training crop and evaluation letterbox), holes included; the other keeps its box."""
    height, width = 48, 64
    boxes = np.array([[5, 5, 40, 40], [20, 10, 60, 46]], np.float64)
    yy, xx = np.mgrid[:height, :width]
    distance = np.hypot(yy + 0.5 - 22.5, xx + 0.5 - 22.5)
    ring = (distance < 17) & (distance > 8)
    sample = make_sample(1, boxes, [ring, None], height, width)
    meta = reader.decode_meta(sample)
    x0, y0, x1, y1 = meta["mask"]["rects"][:4]
    crop = np.where(ring, 255, 0).astype(np.uint8)[y0:y1, x0:x1]
    crops_used = []
    original = augment.random_crop
    monkeypatch.setattr(augment, "random_crop", lambda *a, **k: crops_used.append(original(*a, **k)) or crops_used[-1])
    options = LoaderOptions(regions_per_image=2, batch_size=2, full_image_ratio=0.0, flip=False, min_visible=0.9)

    evaluation = augment.eval_view(sample, 32, max_regions=2)
    letterbox = np.array([0.0, -8.0, 64.0, 56.0])  # 64 x 48 padded to 64 x 64, centred
    k = evaluation.region_ids.index(0)
    np.testing.assert_array_equal(evaluation.alphas[k], augment.mask_alpha(crop, [x0, y0, x1, y1], letterbox, 32, False))
    assert evaluation.alphas[k][15, 11] == 0  # the ring's hole: stored (22.5, 22.5) -> (11, 15)
    rows, cols = masks.box_profiles(boxes[1:].astype(np.float32), height, width, 0.0)
    np.testing.assert_array_equal(evaluation.alphas[1 - k], augment.profile_alphas(rows, cols, np.array([0]), letterbox, 32, False)[0])

    for seed in range(5):
        training = augment.train_views(sample, 2, 32, options, random.Random(seed))
        box = crops_used[-1]
        k = training.region_ids.index(0)
        np.testing.assert_array_equal(training.alphas[k], augment.mask_alpha(crop, [x0, y0, x1, y1], box, 32, False))
        inside = ring[int(np.ceil(box[1] - 0.5)):int(np.ceil(box[3] - 0.5)), int(np.ceil(box[0] - 0.5)):int(np.ceil(box[2] - 0.5))].sum()
        full_image = box.tolist() == [0.0, 0.0, 64.0, 48.0]
        assert full_image or inside >= 0.9 * ring.sum()
