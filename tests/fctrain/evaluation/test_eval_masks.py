"""fc eval's box-vs-mask rows: the same candidates with the box alpha and with the real mask."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from fcdata.tarformat import TarShardWriter
from fctrain.config import EVAL_METHODS, EvalOptions
from fctrain.evaluation.methods import BENCHMARK_METHODS, GEOMETRIES, METHODS, Geometry, Region, Tower, build_views, needs_masks
from fctrain.evaluation.regions import METHOD_TITLES, load_eval_images
from tests.fcdata.test_segmasks import make_sample
from tiny_models import BENCHMARK_PHRASES


def _ring_shards(folder):
    """Two images of two regions each; only image 1's first region has a real mask (a ring)."""
    height, width = 48, 64
    yy, xx = np.mgrid[:height, :width]
    distance = np.hypot(yy + 0.5 - 22.5, xx + 0.5 - 22.5)
    ring = (distance < 17) & (distance > 8)
    boxes = np.array([[5, 5, 40, 40], [20, 10, 60, 46]], np.float64)
    writer = TarShardWriter(folder / "val-00000.tar")
    for image_id, full in ((1, [ring, None]), (2, [None, None])):
        sample = make_sample(image_id, boxes, full, height, width)
        for name, data in sample.items():
            writer.write(f"{image_id:09d}.{name}", data)
    writer.close()
    return ring


def test_mask_alphas_differ_from_box_alphas_only_where_a_real_mask_is(tmp_path):
    """Regions with a real mask get it in mask_alphas (a ring has a hole the box has not);
    regions without keep the box alpha in both."""
    _ring_shards(tmp_path)
    masked, boxed = load_eval_images(EvalOptions(shards=str(tmp_path), max_images=2), 32)
    k = masked.phrases.index("thing 0")
    assert not np.array_equal(masked.mask_alphas[k], masked.alphas[k])
    assert masked.alphas[k][15, 11] == 255 and masked.mask_alphas[k][15, 11] == 0  # the ring's hole
    np.testing.assert_array_equal(masked.mask_alphas[1 - k], masked.alphas[1 - k])
    np.testing.assert_array_equal(boxed.mask_alphas, boxed.alphas)
    assert "focus_mask" in EVAL_METHODS and "focus_mask" in METHOD_TITLES


BOX = (10, 8, 50, 40)  # x0, y0, x1, y1


def _ring_in_box(height: int, width: int) -> np.ndarray:
    """A ring well inside BOX: its box is smaller than BOX and it has a hole."""
    yy, xx = np.mgrid[:height, :width]
    distance = np.hypot(yy + 0.5 - 24, xx + 0.5 - 30)
    return (((distance < 12) & (distance > 5)) * 255).astype(np.uint8)


@pytest.mark.parametrize("mask_view, box_view", [("crop_mask", "crop"), ("blur_mask", "blur"), ("grayscale_mask", "grayscale")])
def test_a_mask_prompt_equals_its_box_prompt_for_a_box_mask_and_differs_for_a_shape(mask_view, box_view):
    """With the box itself as the mask, each mask prompt shows exactly its box prompt's pixels; with
    a ring, crop_mask crops to the ring's box and blur / gray also reach the ring's hole."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    as_box = np.zeros((48, 64), np.uint8)
    as_box[BOX[1] : BOX[3], BOX[0] : BOX[2]] = 255
    keep = Geometry("identity", lambda img, alphas, size: (img, alphas))  # compare pixels unresized
    shown = {name: build_views(image, [Region(tuple(map(float, BOX)), mask)], mask_view, keep, 0, 1).pictures[0]
             for name, mask in (("box", as_box), ("ring", _ring_in_box(48, 64)))}
    boxed = build_views(image, [Region(tuple(map(float, BOX)))], box_view, keep, 0, 1).pictures[0]
    np.testing.assert_array_equal(shown["box"], boxed)
    ring = shown["ring"]
    if mask_view == "crop_mask":
        ys, xs = np.nonzero(_ring_in_box(48, 64))
        np.testing.assert_array_equal(ring, image[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])
        assert ring.shape[0] < boxed.shape[0] and ring.shape[1] < boxed.shape[1]
    else:
        assert ring.shape == boxed.shape
        assert np.array_equal(ring[24, 30 - 8], image[24, 30 - 8])  # on the ring: the image
        assert not np.array_equal(ring[24, 30], image[24, 30]) and np.array_equal(boxed[24, 30], image[24, 30])  # the hole


def test_mask_baselines_on_the_tower_differ_only_for_the_region_with_a_real_mask(make_trained_tiny):
    """Through the tower (plain CLIP, squash view), blur_mask / grayscale_mask / crop_mask features
    equal blur / grayscale / crop for a region whose mask is its box, and differ for a ring."""
    model, _ = make_trained_tiny(BENCHMARK_PHRASES)
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    as_box = np.zeros((48, 64), np.uint8)
    as_box[4:44, 40:60] = 255
    regions = [Region(tuple(map(float, BOX)), _ring_in_box(48, 64)), Region((40.0, 4.0, 60.0, 44.0), as_box)]
    tower = Tower(model, batch_size=4)
    views = ("crop", "crop_mask", "blur", "blur_mask", "grayscale", "grayscale_mask")
    features = tower.encode_images([(image, regions)], views, GEOMETRIES["squash"])[0]
    tower.close()
    for box_view in ("crop", "blur", "grayscale"):
        cosine = (features[box_view] * features[f"{box_view}_mask"]).sum(-1)
        assert cosine[0] < 1 - 1e-4, (box_view, cosine)  # the ring
        assert cosine[1] > 1 - 1e-5, (box_view, cosine)  # the box as its mask


def test_every_benchmark_method_has_views_and_a_title():
    """The one method table covers VG regions' rows and the REC / ImageNet-S methods, each titled;
    the box-only detector setting refuses every mask method."""
    from fctrain.evaluation import imagenet_s, rec

    for name in (*EVAL_METHODS, *BENCHMARK_METHODS):
        assert name in METHODS and name in METHOD_TITLES, name
    assert set(rec.DEFAULT_METHODS) <= set(BENCHMARK_METHODS) and set(imagenet_s.DEFAULT_METHODS) <= set(BENCHMARK_METHODS)
    assert [m for m in rec.DEFAULT_METHODS if needs_masks(m)] == ["alpha_mask", "crop_mask", "blur_mask", "crop_blur_mask", "grayscale_mask"]


def test_vg_mask_baselines_use_the_real_mask_in_stored_pixels_and_the_box_elsewhere(tmp_path, make_trained_tiny):
    """VG regions: the candidate's stored-size mask is the shard's ring (the box where it has none),
    and a blur / gray mask view differs from its box view only for that candidate."""
    from fctrain.evaluation.methods import mask_box
    from fctrain.evaluation.regions import region_features, stored_regions

    ring = _ring_shards(tmp_path)
    images = load_eval_images(EvalOptions(shards=str(tmp_path), max_images=2), 64)
    k = images[0].phrases.index("thing 0")
    regions = stored_regions(images[0])
    np.testing.assert_array_equal(regions[k].mask > 0, ring)
    assert np.all(regions[1 - k].mask[10:46, 20:60] == 255) and regions[1 - k].mask.sum() == 255 * 36 * 40
    ys, xs = np.nonzero(ring)
    assert mask_box(regions[k].mask, (5, 5, 40, 40)) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) != (5, 5, 40, 40)
    noise = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)  # the test image is black: blur would not show
    for box_view in ("blur", "grayscale"):
        with_box, with_mask = (build_views(noise, regions, view, GEOMETRIES["letterbox"], 64, 4).pictures
                               for view in (box_view, f"{box_view}_mask"))
        assert not np.array_equal(with_box[k], with_mask[k]) and np.array_equal(with_box[1 - k], with_mask[1 - k]), box_view
    model, _ = make_trained_tiny(BENCHMARK_PHRASES)
    options = EvalOptions(shards=str(tmp_path), max_images=2, batch_size=3)
    features = region_features("blur_mask", model, images, options)
    assert features.shape == (4, model.base_clip.config.projection_dim) and torch.allclose(features.norm(dim=-1), torch.ones(4))
