"""SAM2 through Sam2Model with this project's preprocessing (no torchvision): inputs, coordinates,
batching, masks at the image's size, and fc masks picking SAM2 from the folder's config."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fcdata import reader, refine, tarformat
from fcdata.options import MaskOptions, ShardOptions, SynthOptions
from fcdata.sam import IMAGENET_MEAN, IMAGENET_STD, SamMasker, Sam2Preprocess, tiny_sam2
from fcdata.shard import shard_vg
from fcdata.synth import generate_vg

SIZE = 128


@pytest.fixture(scope="module")
def sam2_dir(tmp_path_factory):
    return tiny_sam2(tmp_path_factory.mktemp("sam2") / "tiny-sam2", image_size=SIZE)


def test_preprocess_normalises_resizes_and_scales_prompts_per_axis(sam2_dir):
    """A flat colour comes out as (c / 255 - mean) / std at the model's square size; box and point
    coordinates are scaled by the input size over the image's, per axis (no aspect kept)."""
    preprocess = Sam2Preprocess.of(sam2_dir)
    assert (preprocess.height, preprocess.width) == (SIZE, SIZE)
    image = np.empty((70, 90, 3), np.uint8)
    image[...] = (200, 100, 30)
    boxes = preprocess(image, np.array([[9.0, 7.0, 45.0, 35.0]]), as_points=False)
    expected = (torch.tensor([200, 100, 30]) / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert boxes["pixel_values"].shape == (1, 3, SIZE, SIZE)
    torch.testing.assert_close(boxes["pixel_values"][0, :, 5, 7], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(boxes["input_boxes"], torch.tensor([[[9 * SIZE / 90, 7 * SIZE / 70, 45 * SIZE / 90, 35 * SIZE / 70]]]))
    points = preprocess(image, np.array([[45.0, 35.0], [0.0, 70.0]]), as_points=True)
    torch.testing.assert_close(points["input_points"], torch.tensor([[[[SIZE / 2, SIZE / 2]], [[0.0, float(SIZE)]]]]))
    assert points["input_labels"].tolist() == [[[1], [1]]]  # foreground clicks
    assert points["original_sizes"].tolist() == [[70, 90]]


def test_logits_come_back_at_the_image_size():
    """Low-resolution logits positive on their left half give a mask of the image's left half."""
    logits = torch.full((1, 2, 1, 32, 32), -5.0)
    logits[0, :, 0, :, :16] = 5.0
    [masks] = Sam2Preprocess().post_process_masks(logits, torch.tensor([[60, 100]]))
    assert masks.shape == (2, 1, 60, 100) and masks.dtype == torch.bool
    assert masks[..., :48].all() and not masks[..., 52:].any()


def test_a_batch_predicts_what_each_image_predicts_alone(sam2_dir):
    """Images of different sizes in one encoder batch: each one's masks (at its own size) and
    IoUs equal those of predicting it alone; an image without prompts gets empty arrays."""
    masker = SamMasker.load(sam2_dir, "cpu")
    assert masker.kind == "sam2"
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (70, 90, 3), dtype=np.uint8), rng.integers(0, 255, (120, 50, 3), dtype=np.uint8),
              rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)]
    boxes = [np.array([[5, 5, 60, 50], [10, 20, 80, 69]]), np.array([[3, 10, 45, 110]]), np.zeros((0, 4))]
    together = masker.predict(images, boxes=boxes)
    for image, box, joint in zip(images, boxes, together):
        [alone] = masker.predict([image], boxes=[box])
        assert joint.masks.shape == (len(box), *image.shape[:2]) and joint.masks.dtype == bool
        np.testing.assert_allclose(joint.iou, alone.iou, rtol=1e-4, atol=1e-5)
        assert joint.masks.size == 0 or (joint.masks == alone.masks).mean() > 0.999  # a logit within float noise of 0 may flip
    [clicked] = masker.predict(images[:1], points=[np.array([[10, 20], [60, 40]])])
    assert clicked.masks.shape == (2, 70, 90) and clicked.iou.shape == (2,)


def test_fc_masks_picks_sam2_from_the_folder_and_falls_back_to_boxes(sam2_dir, tmp_path):
    """refine_shards on a SAM2 folder: with permissive thresholds prompted regions get SAM2's
    masks; with the defaults a random model's unsure masks leave every region its box."""
    generate_vg(tmp_path / "vg", SynthOptions(num_images=4, regions_per_image=4, long_side_px=(128, 160)))
    shard_vg(tmp_path / "vg", tmp_path / "shards", ShardOptions(shard_samples=4, workers=1, val_fraction=0.0))
    permissive = MaskOptions(batch_images=3, min_predicted_iou=0.0, max_outside_box=1.0, device="cpu")
    summary = refine.refine_shards(tmp_path / "shards", tmp_path / "out", sam2_dir, permissive)
    assert summary["images"] == 4 and summary["regions"]["regions_sam"] > 0
    masker = SamMasker.load(sam2_dir, "cpu")
    shard = sorted((tmp_path / "shards").glob("*.tar"))[0]
    sample_in = reader.decode_sample(next(iter(tarformat.iter_shard(shard))))
    sample_out = reader.decode_sample(next(iter(tarformat.iter_shard(tmp_path / "out" / shard.name))))
    [prediction] = masker.predict([sample_in.image], boxes=[np.asarray(sample_in.meta["regions"]["box"])])
    for k, source in enumerate(sample_out.mask_sources):
        if source == "sam":
            np.testing.assert_array_equal(sample_out.masks[k] > 0, prediction.masks[k])
    defaults = refine.refine_shards(tmp_path / "shards", tmp_path / "out-defaults", sam2_dir, MaskOptions(device="cpu"))
    assert defaults["regions"]["regions_sam"] == 0
    assert defaults["regions"]["box_low_predicted_iou"] + defaults["regions"]["box_empty_mask"] > 0


def test_an_unreadable_or_unsupported_preprocessor_config_is_one_line(sam2_dir, tmp_path):
    """A broken preprocessor_config.json, or a resample this does not do, is a UserError; bicubic is read."""
    import json
    import shutil

    from fcdata.errors import UserError

    folder = shutil.copytree(sam2_dir, tmp_path / "copy")
    config = json.loads((folder / "preprocessor_config.json").read_text())
    (folder / "preprocessor_config.json").write_text(json.dumps(dict(config, resample=3)))
    assert Sam2Preprocess.of(folder).mode == "bicubic"
    (folder / "preprocessor_config.json").write_text(json.dumps(dict(config, resample=1)))
    with pytest.raises(UserError, match="resample 1"):
        SamMasker.load(folder, "cpu")
    (folder / "preprocessor_config.json").write_text("{not json")
    with pytest.raises(UserError, match="cannot read preprocessor_config.json"):
        SamMasker.load(folder, "cpu")
