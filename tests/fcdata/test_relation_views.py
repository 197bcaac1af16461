import io
import json
import random

import numpy as np
import pytest
import torch
from PIL import Image

from fcdata import keys, masks
from fcdata.augment import train_views
from fcdata.errors import UserError
from fcdata.loader import RegionStream, make_loader, resolve_shards
from fcdata.options import LoaderOptions
from fcdata.relation_views import RELATION_VIEW, SampleRelations, negative_texts

SIZE = 64
RED, GREEN = (60, 20, 100, 80), (110, 30, 170, 90)  # subject and object boxes, stored pixels


def relation_sample(relations: list[tuple[str, str, str, tuple, tuple]], width: int = 200, height: int = 120) -> dict:
    """A shard sample: a red and a green box painted on black, one region each, and `relations`
    (subject name, predicate, object name, subject box, object box)."""
    image = np.zeros((height, width, 3), np.uint8)
    image[RED[1] : RED[3], RED[0] : RED[2]] = (255, 0, 0)
    image[GREEN[1] : GREEN[3], GREEN[0] : GREEN[2]] = (0, 255, 0)
    png = io.BytesIO()
    Image.fromarray(image).save(png, "PNG")
    boxes = [RED, GREEN]
    rows, cols = masks.box_profiles(np.array(boxes, np.float32), height, width, 0.0)
    meta = {
        "image_id": 1, "width": width, "height": height,
        "regions": {"region_id": [1, 2], "phrase": ["red", "green"], "box": [list(b) for b in boxes]},
        "relations": {
            "phrase": [f"{s} {p} {o}" for s, p, o, _, _ in relations],
            "subject_name": [r[0] for r in relations], "predicate": [r[1] for r in relations],
            "object_name": [r[2] for r in relations],
            "subject_box": [list(r[3]) for r in relations], "object_box": [list(r[4]) for r in relations],
        },
        "mask": {"layout": keys.MASK_LAYOUT_SEPARABLE},
    }
    return {keys.IMAGE: png.getvalue(), keys.MASK_PROFILES: masks.encode_profiles(rows, cols, True), keys.META: json.dumps(meta).encode()}


def relation_options(**changes) -> LoaderOptions:
    base = dict(regions_per_image=1, batch_size=1, relation_ratio=1.0, full_image_ratio=0.0, min_visible=1.0)
    return LoaderOptions(**{**base, **changes})


@pytest.mark.parametrize("seed", range(6))
def test_relation_view_grades_subject_object_and_background_through_crop_and_flip(seed):
    """The relation view's alpha is the subject's weight on the subject's pixels, the object's on the
    object's, the background's elsewhere, after the crop, resize and flip of the image; its swapped
    view trades the two weights; a flip mirrors the phrase and the negative captions."""
    sample = relation_sample([("red", "left of", "green", RED, GREEN)])
    views = train_views(sample, 1, SIZE, relation_options(relation_weights=(1.0, 0.4, 0.1)), random.Random(seed))
    assert views.region_ids == [RELATION_VIEW]
    red = (views.image[..., 0] > 200) & (views.image[..., 1] < 60)
    green = (views.image[..., 1] > 200) & (views.image[..., 0] < 60)
    black = views.image.max(-1) < 30
    alpha, swapped = views.alphas[0].astype(int), views.negatives.alphas[0].astype(int)
    # Cores of each colour (resampling blurs a pixel at the edges): medians, in 0..255.
    for values, core, expected in ((alpha, red, 255), (alpha, green, 102), (alpha, black, 26), (swapped, red, 102), (swapped, green, 255), (swapped, black, 26)):
        assert core.sum() > 20 and abs(np.median(values[core]) - expected) <= 1
    flipped = views.phrases[0] == "red right of green"
    assert flipped or views.phrases[0] == "red left of green"
    side = "right" if flipped else "left"
    assert views.negatives.alpha_view == [0] and views.negatives.text_view == [0]
    assert views.negatives.texts == [f"green {side} of red"]  # the inverse phrase; no other predicate in the image


def test_negative_captions_are_the_inverse_and_another_predicate_the_pair_lacks():
    """Negative texts: object-predicate-subject, and the pair with a predicate it does not hold."""
    sample = relation_sample([
        ("cup", "on", "table", RED, GREEN), ("cup", "near", "table", RED, GREEN), ("table", "under", "cup", GREEN, RED),
    ])
    relations = SampleRelations.of(json.loads(sample[keys.META]))
    assert negative_texts(relations, 0) == ["table on cup", "cup under table"]  # "near" is held by the pair
    assert negative_texts(relations, 2) == ["cup under table", "table near cup"]


def test_a_swap_that_reads_the_same_is_not_a_negative():
    """Same names and a symmetric predicate ("cup next to cup"), or a listed reverse pair with the
    same phrase: no swapped view and no inverse caption. A directional predicate keeps its swap."""
    def negatives(*relations):
        sample = relation_sample(list(relations))
        return train_views(sample, 1, SIZE, relation_options(flip=False), random.Random(0)).negatives

    same = negatives(("cup", "next to", "cup", RED, GREEN))
    assert same.alpha_view == [] and same.texts == []
    listed = negatives(("cup", "next to", "plate", RED, GREEN), ("cup", "next to", "plate", GREEN, RED))
    assert listed.alpha_view == [] and listed.texts == ["plate next to cup"]
    directional = negatives(("cup", "left of", "cup", RED, GREEN))
    assert directional.alpha_view == [0] and directional.texts == []


def test_relation_views_replace_region_views_only_when_asked():
    """relation_ratio 0: the views are exactly those of a sample without relations; 1: every view
    of an image with relations shows one (distinct phrases, as many as it has)."""
    sample = relation_sample([("red", "left of", "green", RED, GREEN), ("green", "right of", "red", GREEN, RED)])
    bare = dict(sample, **{keys.META: json.dumps({k: v for k, v in json.loads(sample[keys.META]).items() if k != "relations"}).encode()})
    off = dict(regions_per_image=2, batch_size=2, relation_ratio=0.0)
    a = train_views(sample, 2, SIZE, LoaderOptions(**off), random.Random(4))
    b = train_views(bare, 2, SIZE, LoaderOptions(**off), random.Random(4))
    assert a.phrases == b.phrases and np.array_equal(a.alphas, b.alphas) and a.negatives is None
    three = train_views(sample, 3, SIZE, relation_options(regions_per_image=3, batch_size=3), random.Random(4))
    assert three.region_ids == [1, RELATION_VIEW, RELATION_VIEW] or three.region_ids == [2, RELATION_VIEW, RELATION_VIEW]  # two relations: a region fills the third view


def test_relation_weights_are_checked():
    """The subject must be the brightest and the background the dimmest: one-line errors otherwise."""
    for weights in ((0.5, 0.5, 0.0), (1.0, 0.3, 0.5), (1.0, 0.5), (1.2, 0.5, 0.0)):
        with pytest.raises(UserError, match="relation_weights"):
            LoaderOptions(relation_weights=weights)


def test_batches_carry_each_relation_views_negatives(make_shards, tokenizer):
    """In a batch, every swapped view belongs to a relation view of the batch and differs from its
    alpha over the same image; negative captions sit in their view's slots."""
    paths = resolve_shards(str(make_shards(images=24, seed=3, shard_samples=8, val_fraction=0.0)))
    opts = LoaderOptions(batch_size=8, regions_per_image=2, workers=0, relation_ratio=0.5, resample=True, seed=1)
    stream = RegionStream(paths, opts, tokenizer, SIZE)
    seen = 0
    for batch, _ in zip(make_loader(stream), range(4)):
        for slot, alpha in zip(batch.negative_alpha_slot.tolist(), batch.negative_alphas):
            assert batch.region_ids[slot] == RELATION_VIEW and not torch.equal(alpha, batch.alphas[slot])
        views = (batch.negative_text_slot // 2).tolist()
        assert all(batch.region_ids[v] == RELATION_VIEW for v in views)
        assert len(set(batch.negative_text_slot.tolist())) == len(views) and batch.negative_input_ids.shape[1] == batch.input_ids.shape[1]
        seen += len(batch.negative_alpha_slot) + len(views)
    assert seen > 0
