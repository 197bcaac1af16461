import io

import numpy as np
import pytest
import torch
from PIL import Image

from fcdata.reader import RegionSample
from floats import assert_different, assert_same
from fcdata.show import render_box_choice, render_sample
from fctrain.config import DemoOptions
from fctrain.evaluation.regions import EvalImage, box_iou, global_metrics, image_metrics, tie_aware_hit, tie_aware_rank
from fctrain.prompts import attention_bias_features, patch_bias, visual_prompt


def test_ties_count_as_a_random_pick():
    """Identical scores (whole-image CLIP on one image's regions) score chance, not 0 or 1."""
    assert tie_aware_hit(np.array([0.5, 0.5, 0.5, 0.5]), np.array([True, False, False, False])) == 0.25
    assert tie_aware_hit(np.array([0.9, 0.5]), np.array([True, False])) == 1.0
    rank, at1, at5 = tie_aware_rank(np.array([0.3, 0.3, 0.3, 0.9]), 1)
    assert rank == 3.0 and at1 == 0.0 and at5 == 1.0  # one above, two ties: rank 2..4, mean 3
    _, at1, _ = tie_aware_rank(np.array([0.3, 0.3]), 0)
    assert at1 == 0.5


def _image(phrases, boxes):
    size = 32
    return EvalImage(
        image_id=1, stored=None, letterboxed=np.zeros((size, size, 3), np.uint8), alphas=np.zeros((len(phrases), size, size), np.uint8),
        boxes=np.array(boxes, float), model_boxes=np.array(boxes, float), phrases=phrases, objects=[""] * len(phrases),
    )


def test_box_selection_accepts_the_own_box_or_a_heavily_overlapping_one():
    """A phrase whose best-scoring box is its own, or overlaps its own with IoU >= 0.5, is a hit."""
    images = [_image(["a", "b", "c"], [[0, 0, 10, 10], [0, 0, 10, 11], [20, 20, 30, 30]])]
    texts = torch.eye(3)
    regions = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # boxes 0 and 1 swapped
    row, picks = image_metrics(regions, texts, images, iou_threshold=0.5)
    assert row["box_accuracy"] == 1.0  # the swapped boxes overlap with IoU 10/11
    row, _ = image_metrics(regions, texts, images, iou_threshold=0.95)
    assert row["box_accuracy"] == pytest.approx(1 / 3)
    assert row["phrase_r1"] == pytest.approx(1 / 3) and row["box_chance"] == pytest.approx(1 / 3)
    assert [p["chosen"] for p in picks] == [1, 0, 2]


def test_global_retrieval_treats_equal_captions_as_one():
    """Two regions with the same caption (ignoring case) do not compete for it."""
    cat, dog = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    texts = torch.stack([cat, cat, dog])  # equal captions embed equally
    regions = torch.stack([cat, cat, dog])  # two regions show a cat, one a dog
    perfect = global_metrics(regions, texts, ["a cat", "A cat", "a dog"])
    assert perfect["region_to_phrase_r1"] == 1.0 and perfect["phrase_to_region_r1"] == 1.0


def test_box_iou():
    """IoU of boxes (x0, y0, x1, y1), zero when apart."""
    np.testing.assert_allclose(box_iou(np.array([0, 0, 2, 2.0]), np.array([[1, 1, 3, 3.0], [5, 5, 6, 6.0]])), [1 / 7, 0])


@pytest.mark.parametrize("method", ["whole_image", "crop", "blur", "grayscale", "red_outline"])
def test_visual_prompts_change_only_what_they_should(method):
    """Prompts keep the box's pixels (crop keeps only them); outside it they blur, gray or outline."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    box = (10, 5, 30, 25)
    out = np.asarray(visual_prompt(method, image, box))
    if method == "crop":
        assert out.shape == (20, 20, 3) and np.array_equal(out, pixels[5:25, 10:30])
        return
    assert out.shape == pixels.shape
    inner = (slice(8, 22), slice(13, 27))  # inside the box and clear of an outline
    assert np.array_equal(out[inner], pixels[inner])
    outside_changed = not np.array_equal(out[:, 40:], pixels[:, 40:])
    assert outside_changed == (method in ("blur", "grayscale"))
    if method == "red_outline":
        assert tuple(out[5, 20]) == (255, 0, 0)


def test_attention_bias_is_zero_effect_at_strength_zero_and_live_otherwise():
    """The FALIP-style bias equals plain CLIP at strength 0 and changes the features when on."""
    from transformers import CLIPVisionConfig, CLIPConfig, CLIPModel

    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(vision_config=CLIPVisionConfig(image_size=32, patch_size=16, hidden_size=32, intermediate_size=64,
                                                               num_hidden_layers=3, num_attention_heads=2), text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}, projection_dim=16)).eval()
    pixels = torch.randn(2, 3, 32, 32)
    boxes = np.array([[0, 0, 16, 16], [8, 8, 32, 32]], float)
    with torch.no_grad():
        plain = clip.visual_projection(clip.vision_model(pixel_values=pixels).pooler_output)
        off = attention_bias_features(clip, pixels, patch_bias(boxes, 2, 32, 0.0))
        on = attention_bias_features(clip, pixels, patch_bias(boxes, 2, 32, 5.0))
    assert_same(off, plain)  # written-out attention against HF's SDPA: equal to float32 rounding
    assert_different(on, plain)


def test_patch_bias_covers_only_in_box_patches_and_peaks_at_strength():
    """The class-token row bias is zero outside the box and for the class token, max = strength in the centre."""
    bias = patch_bias(np.array([[0, 0, 32, 32.0]]), 4, 64, 0.2)[0]
    grid = bias[1:].view(4, 4)
    assert bias[0] == 0 and grid[2:, :].sum() == 0 and grid[:, 2:].sum() == 0
    assert float(grid.max()) <= 0.2 and float(grid.max()) > 0.15


def _tint_towards(pixels: np.ndarray, colour) -> float:
    """The lowest cosine between (white - pixel) and (white - colour) over the non-white pixels:
    text drawn in `colour` (anti-aliased or not) on white keeps that direction exactly."""
    ink = 255 - pixels.reshape(-1, 3).astype(float)
    ink = ink[ink.sum(axis=1) > 60]
    assert len(ink), "no text drawn"
    target = 255 - np.array(colour, float)
    return float((ink @ target / (np.linalg.norm(ink, axis=1) * np.linalg.norm(target))).min())


def test_sample_picture_tints_each_mask_outlines_its_box_and_lists_its_phrase():
    """render_sample: region k's pixels tinted in colour k, its box outlined in it, a swatch of that
    colour beside its phrase in the legend; pixels of no region untouched."""
    from fcdata.show import PALETTE

    image = np.zeros((20, 30, 3), np.uint8)
    masks = np.zeros((2, 20, 30), np.uint8)
    masks[0, :10, :10] = 255
    masks[1, 5:15, 5:20] = 255
    meta = {"image_id": 7, "regions": {"box": [[0, 0, 10, 10], [5, 5, 20, 15]], "region_id": [1, 2], "phrase": ["a", "b"]}}
    picture = np.asarray(render_sample(RegionSample("7", image, masks, ["a cup", "the bowl"], meta), scale=2))
    tint = [np.array(PALETTE[k]) * 0.45 for k in range(2)]  # 45% colour over the black image
    assert np.abs(picture[6, 6] - tint[0]).max() <= 1  # region 0 only (image pixel 3, 3)
    assert np.abs(picture[26, 30] - tint[1]).max() <= 1  # region 1 only (13, 15)
    assert np.abs(picture[16, 16] - (tint[0] * 0.55 + tint[1])).max() <= 2  # both (8, 8)
    assert picture[36, 50].tolist() == [0, 0, 0]  # no region (18, 25)
    assert picture[0, 10].tolist() == list(PALETTE[0]) and picture[29, 40].tolist() == list(PALETTE[1])  # outlines
    caption = picture[40:]  # below the image at scale 2
    swatch_rows = [np.flatnonzero(np.all(caption == PALETTE[k], axis=2).sum(axis=1) >= 8) for k in range(2)]
    assert all(len(rows) >= 8 for rows in swatch_rows)  # a filled swatch of each region's colour
    assert swatch_rows[0].max() < swatch_rows[1].min()  # in the regions' order
    assert _tint_towards(caption[: swatch_rows[0].min()], (0, 0, 0)) > 0.99  # the title above them, in black


@pytest.mark.parametrize("chosen", [0, 1])
def test_box_choice_picture_marks_the_right_box_green_and_a_wrong_choice_red(chosen):
    """render_box_choice: the right box thick green; a wrong choice thick red, a right one no red at all."""
    image = np.zeros((20, 30, 3), np.uint8)
    boxes = np.array([[0, 0, 10, 10], [5, 5, 20, 15.0]])
    picture = np.asarray(render_box_choice(image, boxes, "a cup", chosen=chosen, correct=0))[:60]  # scale 3
    green, red = [40, 200, 60], [230, 30, 30]
    assert picture[15, 1].tolist() == green  # the right box's left edge
    red_pixels = (picture == red).all(axis=-1)
    assert red_pixels.any() == (chosen != 0)
    if chosen:
        assert red_pixels[30, 58] and red_pixels[44, 40]  # the chosen box's right and bottom edges
    assert picture[35, 40].tolist() == [0, 0, 0]  # inside a box: the image itself


@pytest.mark.slow
def test_alpha_matters_box_selection_clearly_beats_whole_image(tmp_path):
    """End to end (data, shards, tiny CLIP, LoRA + alpha, eval): only the mask says which object a phrase
    means, and the fine-tuned model picks the right box far more often than whole-image CLIP (chance)."""
    from fctrain.demo import run_demo

    result = run_demo(DemoOptions(out_dir=tmp_path, images=400, steps=250, pretrain_steps=250, eval_images=60, workers=2, object_guided=False))
    rows = result.evaluation.results
    focus, whole = rows["focus"]["box_accuracy"], rows["whole_image"]["box_accuracy"]
    assert abs(whole - rows["whole_image"]["box_chance"]) < 0.05  # whole image is chance among an image's regions
    assert focus >= whole + 0.15, rows
    relations = result.relations["methods"]  # the relation table: union views cannot tell a pair from its swap
    assert relations["union_crop"]["swap"] == relations["union_alpha"]["swap"] == 0.5 and relations["relation_alpha"]["selection"] > 0


def test_focus_whole_is_the_trained_model_on_the_whole_image_and_clip_with_the_adapters_off(tmp_path, make_trained_tiny):
    """focus_whole gives every region of an image that image's all-ones-alpha embedding from the
    trained weights; with LoRA and the alpha conv off it is exactly the whole_image row."""
    from fcdata.shard import TarShardWriter
    from fctrain.config import EvalOptions
    from fctrain.evaluation.methods import base_weights
    from fctrain.evaluation.regions import load_eval_images, region_features
    from tests.fcdata.test_segmasks import make_sample

    from tiny_models import BENCHMARK_PHRASES

    model, _ = make_trained_tiny(BENCHMARK_PHRASES)
    writer = TarShardWriter(tmp_path / "val-00000.tar")
    rng = np.random.default_rng(3)
    for image_id in (1, 2):
        sample = make_sample(image_id, np.array([[5, 5, 40, 40], [20, 10, 60, 46]], np.float64), [None, None], 48, 64)
        pixels = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)  # two different images
        encoded = io.BytesIO()
        Image.fromarray(pixels).save(encoded, format="JPEG")
        sample["jpg"] = encoded.getvalue()
        for name, data in sample.items():
            writer.write(f"{image_id:09d}.{name}", data)
    writer.close()
    options = EvalOptions(shards=str(tmp_path), max_images=2)
    images = load_eval_images(options, 64)
    whole = region_features("focus_whole", model, images, options)
    assert_same(whole[0], whole[1])  # one embedding per image
    assert_same(whole[2], whole[3])
    assert_different(whole[0], whole[2])
    clip_rows = region_features("whole_image", model, images, options)
    assert_different(whole, clip_rows)  # the trained weights, not CLIP's
    with base_weights(model):
        off = region_features("focus_whole", model, images, options)
    assert_same(off, clip_rows)


def test_baselines_use_clips_text_tower_when_the_text_tower_has_adapters(make_trained_tiny):
    """With text LoRA, a method on the trained weights scores against the trained text tower and a
    baseline (untrained, crop, ...) against CLIP's own, as its image side is CLIP's."""
    import copy

    import torch

    from fctrain.config import LoraConfig
    from fctrain.evaluation.methods import MethodTexts
    from fctrain.evaluation.scoring import text_features
    from fctrain.model import apply_lora, wrap_clip

    from floats import assert_different, assert_same
    from tiny_models import BENCHMARK_PHRASES

    plain, tokenizer = make_trained_tiny(BENCHMARK_PHRASES)
    torch.manual_seed(0)
    model = apply_lora(wrap_clip(copy.deepcopy(plain.peft_model).unload()), LoraConfig(rank=4, text_targets=("q_proj", "v_proj"))).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    phrases = ["a blue ball", "green thing"]
    texts = MethodTexts(model, tokenizer, phrases, 8, "cpu")
    with torch.no_grad():
        trained = text_features(model, tokenizer, phrases, 8, "cpu")
        clip = text_features(wrap_clip(copy.deepcopy(model.peft_model).unload()), tokenizer, phrases, 8, "cpu")
    assert_same(texts.of(("alpha_box",)), trained)
    for views in (("untrained",), ("crop",), ("crop", "blur")):
        assert_same(texts.of(views), clip)
    assert_different(trained, clip)
    centred = texts.minus_mean_of(texts)  # ReCLIP's bank subtraction (REC), tower by tower
    assert_same(centred.of(("crop",)), clip - clip.mean(0))
    assert_same(centred.of(("alpha_box",)), trained - trained.mean(0))
    plain_texts = MethodTexts(plain, tokenizer, phrases, 8, "cpu")  # no text adapters: one tower
    assert plain_texts.of(("crop",)) is plain_texts.of(("alpha_box",))
