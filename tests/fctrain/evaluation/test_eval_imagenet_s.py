import numpy as np
import pytest
from PIL import Image

from fcdata.synth_benchmarks import NAMES, WNIDS, write_imagenet_s
from fcdata.errors import UserError
from fcdata.transforms import alpha_clip_center_crop, center_crop_box
from fctrain.evaluation.imagenet_s import ImageNetSOptions, class_mask, class_names, evaluate_imagenet_s, per_class_means
from tiny_models import BENCHMARK_PHRASES


def test_metric_is_the_mean_over_classes_not_over_images():
    """Three images of class 0 (one right) and one of class 1 (right): class mean 2/3, image mean 1/2."""
    rows = [(0, 1.0, 1.0), (0, 0.0, 1.0), (0, 0.0, 0.0), (1, 1.0, 1.0)]
    result = per_class_means(rows)
    assert result["top1"] == pytest.approx((1 / 3 + 1) / 2) and result["image_top1"] == pytest.approx(0.5)
    assert result["top5"] == pytest.approx((2 / 3 + 1) / 2) and result["classes"] == 2


def test_class_ids_are_r_plus_256_g_and_ignore_is_left_out(tmp_path):
    """Class 300 is stored as R=44, G=1; the ignore id 1000 never joins a mask."""
    ids = np.zeros((4, 5), np.int32)
    ids[1, 1:3] = 300
    ids[2, 2] = 1000
    Image.fromarray(np.stack([ids % 256, ids // 256, 0 * ids], -1).astype(np.uint8)).save(tmp_path / "s.png")
    mask = class_mask(tmp_path / "s.png", 300)
    assert mask.sum() // 255 == 2 and mask[1, 1] == 255 and mask[2, 2] == 0
    assert class_mask(tmp_path / "s.png", 1000).sum() == 0


def test_center_crop_cuts_the_short_side_square_with_its_masks():
    """The centred square on the short side (Alpha-CLIP's offsets) is what remains, masks with it."""
    assert center_crop_box(60, 90) == (0, 15, 60, 75) and center_crop_box(91, 40) == (25, 0, 65, 40)
    image = np.zeros((90, 60, 3), np.uint8)
    masks = np.zeros((2, 90, 60), np.uint8)
    masks[0, 15:75] = 255  # exactly the kept square
    masks[1, :15] = 255  # only the cut-away top
    image[15:75] = 200
    out, out_masks = alpha_clip_center_crop(image, masks, 32)
    assert out.shape == (32, 32, 3) and out_masks.shape == (2, 32, 32)
    assert np.all(out_masks[0] == 255) and np.all(out_masks[1] == 0) and np.all(out == 200)


def test_class_names_from_a_names_file_or_a_clear_error(tmp_path):
    """Names by wnid or in order; a wrong count or a missing source is one line."""
    root = write_imagenet_s(tmp_path)
    names, source = class_names(WNIDS, root / "names.txt")
    assert names == NAMES and "by wnid" in source
    (tmp_path / "ordered.txt").write_text("a\nb\nc\n")
    assert class_names(WNIDS, tmp_path / "ordered.txt")[0] == ["a", "b", "c"]
    (tmp_path / "short.txt").write_text("a\nb\n")
    with pytest.raises(UserError, match="2 names for 3 categories"):
        class_names(WNIDS, tmp_path / "short.txt")
    try:
        import nltk  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match="install nltk"):
            class_names(WNIDS, None)


def test_imagenet_s_counts_images_classes_and_each_alpha(tmp_path, make_trained_tiny):
    """Images with a segmentation are evaluated under the mask, box and whole alphas and the
    baselines; classes without images do not enter the class mean; bad paths are one line."""
    model, tokenizer = make_trained_tiny(BENCHMARK_PHRASES)
    root = write_imagenet_s(tmp_path)
    methods = ("alpha_mask", "alpha_box", "alpha_whole", "whole_image", "crop", "crop_mask", "blur_mask", "grayscale_mask", "falip")
    report = evaluate_imagenet_s(model, tokenizer, ImageNetSOptions(root, class_names=root / "names.txt", methods=methods))
    assert report.counts["images"] == 4 and report.counts["classes"] == 2
    assert set(report.results) == set(methods)
    for row in report.results.values():
        assert row["images"] == 4 and row["classes"] == 2 and 0 <= row["top1"] <= row["top5"] <= 1
    assert report.examples[0]["box"] == [15.0, 10.0, 40.0, 30.0]  # the class's pixels only, not the other class's
    limited = evaluate_imagenet_s(model, tokenizer, ImageNetSOptions(root, class_names=root / "names.txt", methods=("crop",), max_images=2))
    assert limited.counts["images"] == 2 and limited.counts["classes"] == 2  # spread over the classes, not the first two
    with pytest.raises(UserError, match="categories file"):
        evaluate_imagenet_s(model, tokenizer, ImageNetSOptions(tmp_path / "nowhere", class_names=root / "names.txt"))
