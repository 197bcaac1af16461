import numpy as np
import pytest

from fcdata.errors import UserError
from fcdata.options import ShardOptions, SynthOptions
from fcdata.shard import shard_vg
from fcdata.synth import generate_vg
from fctrain.evaluation.methods import Tower
from fctrain.evaluation.relations import (
    GRADED_WEIGHTS, METHODS, RelationEvalOptions, _features, _regions, evaluate_relations, inverse_phrases, read_relation_images,
)


@pytest.fixture(scope="module")
def relation_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("vg")
    generate_vg(root, SynthOptions(num_images=6, seed=4, long_side_px=(160, 224)))
    out = tmp_path_factory.mktemp("shards")
    shard_vg(root, out, ShardOptions(workers=1, val_fraction=0.0))
    return str(out)


def test_candidates_hold_each_true_pair_and_its_swap(relation_shards):
    """Every relation phrase has its own pair and the swapped pair among the candidates."""
    images = read_relation_images(RelationEvalOptions(split="train", shards=relation_shards, max_pairs=8))
    assert images
    for image in images:
        assert len(image.pairs) <= 8
        for true, swap in zip(image.truth, image.swap):
            np.testing.assert_array_equal(image.pairs[true][::-1], image.pairs[swap])


def test_union_baselines_sit_at_chance_on_swaps(relation_shards, make_trained_tiny):
    """Methods that see only the union of the two boxes (or the whole image) score swaps at
    exactly 0.5 and whole-image selection at chance; the graded curve has a value per weight."""
    model, tokenizer = make_trained_tiny(["a red circle", "circle left of square"], image_size=64)
    report = evaluate_relations(model, tokenizer, RelationEvalOptions(split="train", shards=relation_shards, max_images=4, batch_size=16))
    methods = report["methods"]
    assert set(methods) == set(METHODS)
    for method in ("union_alpha", "union_crop", "union_blur", "whole_image"):
        assert methods[method]["swap"] == 0.5
    whole = methods["whole_image"]
    assert whole["selection"] == pytest.approx(whole["selection_chance"], rel=1e-9)
    assert all(0.0 <= m["selection"] <= 1.0 for m in methods.values())
    assert len(report["graded_control"]["object_similarity"]) == len(GRADED_WEIGHTS)

    # The graded alpha tells a pair from its swap (the alpha conv is non-zero): no forced tie.
    images = read_relation_images(RelationEvalOptions(split="train", shards=relation_shards, max_images=4))
    tower = Tower(model, 16)
    try:
        features = _features(tower, images, *METHODS["relation_alpha"], (1.0, 0.5, 0.0))
    finally:
        tower.close()
    for pair_features, image in zip(features, images):
        cosine = (pair_features[image.truth] * pair_features[image.swap]).sum(-1)
        # Identical inputs give cosines within ~1e-7 of 1 in float32; this tiny untrained model
        # separates a pair from its swap by ~1e-4 (a trained one by far more).
        assert (cosine < 1 - 1e-5).all()


def test_relation_alpha_takes_the_training_weights_background_included(relation_shards):
    """The evaluated relation view grades subject, object and background as data.relation_weights
    does in training (fcdata.relation_views.graded), so fc eval can score the run's own weights."""
    from fcdata.relations import box_mask

    image = read_relation_images(RelationEvalOptions(split="train", shards=relation_shards, max_images=1))[0]
    height, width = image.image.shape[:2]
    subject, obj = image.pairs[image.truth[0]]
    alpha = _regions(image, "graded", (0.9, 0.3, 0.1))[image.truth[0]].mask
    on_subject, on_object = box_mask(subject, height, width), box_mask(obj, height, width)
    background = ~(on_subject | on_object)
    assert np.all(alpha[on_subject] == round(0.9 * 255))
    assert np.all(alpha[on_object & ~on_subject] == round(0.3 * 255))
    assert background.any() and np.all(alpha[background] == round(0.1 * 255))
    with pytest.raises(UserError, match="three values"):
        RelationEvalOptions(weights=(1.0, 0.5))


def test_inverse_phrases_read_each_relation_the_other_way(relation_shards):
    """"A p B" -> "B p A" for every relation of the benchmark (what the text-order figure compares)."""
    phrases, inverses = inverse_phrases(RelationEvalOptions(split="train", shards=relation_shards, max_images=3))
    assert phrases and len(phrases) == len(inverses)
    for phrase, inverse in zip(phrases, inverses):  # the generator names objects "colour shape"
        words, inverse_words = phrase.split(), inverse.split()
        assert inverse_words[:2] == words[-2:] and inverse_words[-2:] == words[:2] and inverse_words[2:-2] == words[2:-2]


def test_shards_without_relations_are_a_clear_error(tmp_path):
    """Shards made with --no-relations give a one-line error, not an empty table."""
    root = tmp_path / "vg"
    generate_vg(root, SynthOptions(num_images=2, seed=1, long_side_px=(160, 224)))
    shard_vg(root, tmp_path / "out", ShardOptions(workers=1, val_fraction=0.0, relations=False))
    with pytest.raises(UserError, match="no image with relations"):
        read_relation_images(RelationEvalOptions(shards=str(tmp_path / "out"), split="train"))
