import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fcdata.errors import UserError
from fcdata.synth_benchmarks import REC_IMAGES, write_rec_dataset
from fcdata.transforms import normalize_images, squash
from fctrain.evaluation.methods import GEOMETRIES, Geometry, Region, Tower, build_views
from fctrain.evaluation.rec import DEFAULT_METHODS, RecOptions, coco_file_name, decode_segmentation, evaluate_rec
from fctrain.prompts import falip_bias
from tiny_models import BENCHMARK_PHRASES

ALL_METHODS = (*DEFAULT_METHODS, "red_outline")  # the mask baselines included


def test_coco_file_name_drops_the_refs_suffix():
    """refs' file names carry the annotation id after the COCO name."""
    assert coco_file_name("COCO_train2014_000000581857_16.jpg") == "COCO_train2014_000000581857.jpg"


def test_segmentations_decode_from_polygons_and_both_rle_forms(tmp_path):
    """Polygon, compressed-RLE and uncompressed-RLE annotations all decode to their box's pixels."""
    root = write_rec_dataset(tmp_path)
    annotations = json.loads((root / "refcoco" / "instances.json").read_text())["annotations"]
    width, height = REC_IMAGES[1]["size"]
    kinds = set()
    for annotation in annotations[:3]:
        kinds.add("polygon" if isinstance(annotation["segmentation"], list) else type(annotation["segmentation"]["counts"]).__name__)
        x, y, w, h = (int(v) for v in annotation["bbox"])
        expected = np.zeros((height, width), np.uint8)
        expected[y : y + h, x : x + w] = 255
        np.testing.assert_array_equal(decode_segmentation(annotation["segmentation"], height, width), expected)
    assert kinds == {"polygon", "str", "list"}
    with pytest.raises(ValueError, match="segmentation is"):
        decode_segmentation(annotations[1]["segmentation"], height + 1, width)


def test_protocol_counting_expressions_proposals_iou_and_ties(tmp_path, make_trained_tiny):
    """Every sentence of every ref of the split is one expression; the proposals are all of the
    image's annotations; IoU must exceed 0.5 (exactly 0.5 misses); a method that cannot tell
    proposals apart (whole image) scores chance exactly."""
    model, tokenizer = make_trained_tiny(BENCHMARK_PHRASES)
    root = write_rec_dataset(tmp_path)
    report = evaluate_rec(model, tokenizer, RecOptions("refcoco", root, "val", methods=ALL_METHODS))
    counts = report.counts
    assert (counts["refs"], counts["images"], counts["expressions"]) == (3, 2, 6)
    assert counts["proposals_per_image"] == pytest.approx(2.5)
    # Image 1 (A, B, C): for A, {A, C} are hits (B's IoU with A is exactly 0.5); for B, {B, C}
    # (IoU 420/800). Image 2 (D, E): one hit of two. (3 * 2/3 + 3 * 1/2) / 6.
    assert counts["chance"] == pytest.approx((3 * 2 / 3 + 3 * 1 / 2) / 6)
    assert report.results["whole_image"]["accuracy"] == pytest.approx(counts["chance"])
    assert set(report.results) == set(ALL_METHODS)
    assert all(row["expressions"] == 6 and 0 <= row["accuracy"] <= 1 for row in report.results.values())
    test_a = evaluate_rec(model, tokenizer, RecOptions("refcoco", root, "testA", methods=("crop",)))
    assert (test_a.counts["expressions"], test_a.counts["proposals_per_image"]) == (2, 3.0)


def test_missing_images_are_counted_and_left_out_of_the_denominator(tmp_path, make_trained_tiny):
    """An image missing on disk is counted with its expressions; accuracy is over the rest."""
    model, tokenizer = make_trained_tiny(BENCHMARK_PHRASES)
    root = write_rec_dataset(tmp_path, missing_images=(2,))
    report = evaluate_rec(model, tokenizer, RecOptions("refcoco", root, "val", methods=("crop",)))
    assert report.counts["images_missing"] == 1 and report.counts["expressions_skipped"] == 3
    assert report.counts["expressions"] == 3 and report.results["crop"]["expressions"] == 3
    assert "left out" in report.settings["accuracy_denominator"]


def test_bad_input_is_one_line(tmp_path, make_trained_tiny):
    """Unknown split, missing dataset files, masks without segmentations: UserError, nothing else."""
    model, tokenizer = make_trained_tiny(BENCHMARK_PHRASES)
    root = write_rec_dataset(tmp_path)
    with pytest.raises(UserError, match="no split 'test'; its splits: testA, testB, val"):
        evaluate_rec(model, tokenizer, RecOptions("refcoco", root, "test"))
    with pytest.raises(UserError, match="refcocog"):
        evaluate_rec(model, tokenizer, RecOptions("refcocog", root, "val"))
    (root / "refcocog").mkdir()
    with pytest.raises(UserError, match=r"refs\(umd\).p: no such file"):
        evaluate_rec(model, tokenizer, RecOptions("refcocog", root, "val"))
    proposals = tmp_path / "dets.json"
    proposals.write_text(json.dumps({"1": [[0, 0, 20, 20]]}))
    with pytest.raises(UserError, match="alpha_mask needs the ground-truth setting"):
        evaluate_rec(model, tokenizer, RecOptions("refcoco", root, "val", proposals=proposals, methods=("alpha_mask",)))
    with pytest.raises(UserError, match="unknown method 'nope'"):
        evaluate_rec(model, tokenizer, RecOptions("refcoco", root, "val", methods=("nope",)))


def test_detector_proposals_and_an_image_without_detections(tmp_path, make_trained_tiny):
    """Detections replace the annotations; an image with none is scored against the whole image."""
    model, tokenizer = make_trained_tiny(BENCHMARK_PHRASES)
    root = write_rec_dataset(tmp_path)
    proposals = tmp_path / "dets.json"
    proposals.write_text(json.dumps([{"image_id": 1, "box": [0, 0, 20, 20]}, {"image_id": 1, "box": [50, 30, 40, 30]}]))
    report = evaluate_rec(model, tokenizer, RecOptions("refcoco", root, "val", proposals=proposals, methods=("crop", "falip")))
    assert report.counts["images_without_proposals"] == 1
    assert report.counts["proposals_per_image"] == pytest.approx(1.5)
    # Image 1: A's expressions hit only the first detection, B's none (IoU 0.5); image 2: the whole image misses E.
    assert report.counts["chance"] == pytest.approx((2 * 1 / 2) / 6)
    assert report.settings["setting"] == "detector"


def test_base_views_run_plain_clip_and_alpha_views_the_trained_model(make_trained_tiny):
    """Baselines see the base weights (LoRA off, alpha off) whatever the model learned; alpha views
    see the trained model, and a box alpha differs from the whole-image alpha."""
    model, _ = make_trained_tiny(BENCHMARK_PHRASES)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (48, 80, 3), dtype=np.uint8)
    regions = [Region((4.0, 6.0, 30.0, 40.0)), Region((40.0, 0.0, 80.0, 48.0))]
    tower = Tower(model, batch_size=3)
    features = tower.encode_images([(image, regions)], ("crop", "alpha_box", "alpha_whole"), GEOMETRIES["squash"])[0]
    crops = [squash(np.ascontiguousarray(image[6:40, 4:30]), np.zeros((0, 34, 26), np.uint8), model.image_size)[0],
             squash(np.ascontiguousarray(image[0:48, 40:80]), np.zeros((0, 48, 40), np.uint8), model.image_size)[0]]
    pixels = normalize_images(torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2))
    with torch.no_grad(), model.peft_model.disable_adapter():
        clip = model.base_clip
        expected = F.normalize(clip.visual_projection(clip.vision_model(pixel_values=pixels).pooler_output), dim=-1)
    cosine = (features["crop"] * expected).sum(-1)
    assert torch.all(cosine > 1 - 1e-5), cosine
    assert features["alpha_whole"].shape == (2, expected.shape[1])
    assert torch.all((features["alpha_box"] * features["alpha_whole"]).sum(-1) < 1 - 1e-4)
    tower.close()


def test_falip_bias_follows_falips_token_rule():
    """Tokens as FALIP's ceil rule picks them (a right/bottom edge on a patch boundary stays out, a
    left/top one takes in the patch before it), weights min-max
    normalised to [0, 0.2] over them, zero elsewhere and for the class token."""
    bias = falip_bias(np.array([[16.0, 0.0, 56.0, 20.0]]), grid=14, size=224)[0]
    tokens = bias[1:].view(14, 14)
    assert bias[0] == 0
    assert set(map(tuple, torch.nonzero(tokens).tolist())) == {(r, c) for r in (0, 1) for c in (0, 1, 2, 3)}
    assert float(tokens.max()) == pytest.approx(0.2) and float(tokens[tokens > 0].min()) < 0.01
    one = falip_bias(np.array([[20.0, 20.0, 30.0, 30.0]]), grid=14, size=224)[0][1:].view(14, 14)
    assert float(one[1, 1]) == pytest.approx(0.2) and float(one.sum()) == pytest.approx(0.2)


def test_visual_prompts_red_circle_blur_and_crop():
    """Red circle draws a red ellipse and keeps every other pixel; blur keeps the box sharp and
    changes the rest; crop shows only the box."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (60, 90, 3), dtype=np.uint8)
    regions = [Region((20.0, 10.0, 60.0, 50.0))]
    keep = Geometry("identity", lambda img, alphas, size: (img, alphas))  # compare pixels unresized
    circled = build_views(image, regions, "red_circle", keep, 0, 1).pictures[0]
    changed = np.any(circled != image, axis=-1)
    assert changed.any() and np.all(circled[changed] == (255, 0, 0))
    assert not changed[:, :19].any() and not changed[:9].any() and not changed[30, 30:50].any()  # outline only
    blurred = build_views(image, regions, "blur", keep, 0, 1).pictures[0]
    assert np.array_equal(blurred[10:50, 20:60], image[10:50, 20:60]) and not np.array_equal(blurred[:, :20], image[:, :20])
    crop = build_views(image, regions, "crop", keep, 0, 1).pictures[0]
    assert np.array_equal(crop, image[10:50, 20:60])


@pytest.mark.gpu
def test_rec_on_cuda_matches_cpu(tmp_path, make_trained_tiny):
    """The harness runs on CUDA (attention bias, alpha views, batched tower) and agrees with the CPU
    run: same counts, and accuracies equal up to near-ties (features agree to a cosine of 1 - 1e-4)."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    import copy

    model, tokenizer = make_trained_tiny(BENCHMARK_PHRASES)
    root = write_rec_dataset(tmp_path)
    options = RecOptions("refcoco", root, "val", methods=ALL_METHODS)
    cpu = evaluate_rec(model, tokenizer, options)
    gpu_model = copy.deepcopy(model).cuda()
    gpu = evaluate_rec(gpu_model, tokenizer, options)
    assert gpu.counts == cpu.counts
    image = np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8)
    regions = [Region((4.0, 6.0, 30.0, 40.0)), Region((40.0, 0.0, 80.0, 48.0))]
    views = ("alpha_box", "crop", "falip")
    on_cpu = Tower(model, 4).encode_images([(image, regions)], views, GEOMETRIES["squash"])[0]
    on_gpu = Tower(gpu_model, 4).encode_images([(image, regions)], views, GEOMETRIES["squash"])[0]
    for view in views:
        assert torch.all((on_cpu[view] * on_gpu[view]).sum(-1) > 1 - 1e-4), view


def test_subtract_removes_what_the_bank_shares_with_the_expression(tmp_path, make_trained_tiny):
    """Score subtraction is score minus the mean score over the bank: with a bank holding only the
    expression itself every score becomes 0, a tie, so every method scores chance exactly."""
    model, tokenizer = make_trained_tiny(BENCHMARK_PHRASES)
    root = write_rec_dataset(tmp_path)
    options = RecOptions("refcoco", root, "testB", methods=("crop", "falip", "alpha_box"), subtract=True, bank_size=1)
    report = evaluate_rec(model, tokenizer, options)
    assert report.counts["expressions"] == 1 and report.settings["setting"] == "gt-boxes, subtracted"
    assert all(row["accuracy"] == pytest.approx(report.counts["chance"]) for row in report.results.values())
    plain = evaluate_rec(model, tokenizer, RecOptions("refcoco", root, "testB", methods=("crop",)))
    assert plain.results["crop"]["accuracy"] in (0.0, 1.0)  # without subtraction the crop scores differ
