"""The loader's fast path (simplejpeg into PIL's resize, orjson, token ids cached per caption,
batches written into shared memory) against a
straightforward implementation of the same views: equal bit for bit where the random choices are."""

import io
import json
import random

import numpy as np
import pytest
import torch
from PIL import Image

from fcdata import augment, jpeg, keys, masks
from fcdata.captions import CaptionTokens, tokenize_captions
from fcdata.loader import RegionStream, collate, make_loader, resolve_shards
from fcdata.options import LoaderOptions
from fcdata.tarformat import iter_shard
from test_loader import options  # the tokenizer fixture is tests/fcdata/conftest.py's

OPTIONS = LoaderOptions(batch_size=4, regions_per_image=2, full_image_ratio=0.5)


def reference_views(sample: dict, count: int, size: int, options: LoaderOptions, rng: random.Random) -> tuple[augment.ImageViews, bool]:
    """The views as the module docstring of fcdata.augment describes them, one plain step at a
    time, and whether they were mirrored."""
    meta = json.loads(sample[keys.META])
    regions = augment.SampleRegions.of(meta, options.full_image_min_cover)
    chosen = augment.choose_regions(regions, count, options, rng)
    rows, cols = masks.decode_profiles(sample[keys.MASK_PROFILES], meta["height"], np.maximum(chosen, 0).tolist())
    real = augment.real_masks(sample, meta, chosen) if meta["mask"]["layout"] == keys.MASK_LAYOUT_RUNS else augment.NO_REAL_MASKS
    image = Image.open(io.BytesIO(sample[keys.IMAGE]))
    image.draft("RGB", (size, size))
    image = image.convert("RGB")
    box = augment.random_crop(regions, chosen, options, rng, real)
    scale = np.array([meta["width"] / image.size[0], meta["height"] / image.size[1]] * 2)
    picture = image.resize((size, size), Image.Resampling.BILINEAR, box=tuple(np.minimum(box / scale, image.size * 2).tolist()))
    flip = bool(options.flip and rng.random() < 0.5)
    if flip:
        picture = picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    alphas = []
    for k in chosen.tolist():
        if k < 0:
            alphas.append(np.full((size, size), 255, np.uint8))
        elif k in real.crops:
            alphas.append(augment.mask_alpha(*real.crops[k], box, size, flip))
        else:
            m = chosen.tolist().index(k)
            alphas.append(augment.profile_alphas(rows, cols, np.array([m]), box, size, flip)[0])
    phrases = [regions.phrases[regions.cover if k < 0 else k] for k in chosen.tolist()]
    return augment.ImageViews(
        np.asarray(picture), np.stack(alphas), [augment.mirror_phrase(p) for p in phrases] if flip else phrases,
        [-1 if k < 0 else regions.region_ids[k] for k in chosen.tolist()], regions.image_id,
    ), flip


@pytest.fixture(scope="module")
def samples(make_shards):
    paths = resolve_shards(str(make_shards(images=16, seed=5, shard_samples=8, val_fraction=0.0)), "train")
    return paths, [s for path in paths for s in iter_shard(path)]


@pytest.mark.parametrize("size", [224, 96, 40, 20])  # DCT scales 1, 2, 4 and 8 of these 160-224 px images
def test_train_views_equal_the_reference_bit_for_bit(samples, size):
    """Same RNG seed, same views: pixels, alphas, phrases (mirrored ones too) and ids, at every DCT scale."""
    flips = 0
    for number, sample in enumerate(samples[1]):
        fast = augment.train_views(sample, 2, size, OPTIONS, random.Random(number))
        slow, flipped = reference_views(sample, 2, size, OPTIONS, random.Random(number))
        np.testing.assert_array_equal(fast.image, slow.image)
        np.testing.assert_array_equal(fast.alphas, slow.alphas)
        assert (fast.phrases, fast.region_ids, fast.image_id) == (slow.phrases, slow.region_ids, slow.image_id)
        flips += flipped
    assert 0 < flips < len(samples[1])  # both branches were compared


def test_jpeg_decode_equals_pils_at_its_draft_scale(samples):
    """simplejpeg at the draft's DCT scale gives PIL's pixels, size and all."""
    for sample in samples[1][:6]:
        for size in (224, 80, 40, 20):
            pil = Image.open(io.BytesIO(sample[keys.IMAGE]))
            pil.draft("RGB", (size, size))
            fast = jpeg.decode_for_resize(sample[keys.IMAGE], size)
            assert fast.mode == "RGBX" and fast.size == pil.size
            np.testing.assert_array_equal(np.asarray(fast)[..., :3], np.asarray(pil.convert("RGB")))


def test_collated_batch_equals_stacked_and_tokenised(samples, tokenizer):
    """collate (cached token ids, one copy into the batch) = np.stack + tokenize_captions."""
    views = [augment.train_views(s, 2, 40, OPTIONS, random.Random(n)) for n, s in enumerate(samples[1][:5])]
    batch = collate(views, CaptionTokens(tokenizer, 77), 0, 5, {})
    phrases = [p for v in views for p in v.phrases]
    tokens = tokenize_captions(tokenizer, phrases, max_length=77, return_tensors="np")
    assert torch.equal(batch.images.permute(0, 2, 3, 1), torch.from_numpy(np.stack([v.image for v in views])))
    assert torch.equal(batch.alphas[:, 0], torch.from_numpy(np.concatenate([v.alphas for v in views])))
    np.testing.assert_array_equal(batch.input_ids.numpy(), tokens["input_ids"])
    np.testing.assert_array_equal(batch.attention_mask.numpy(), tokens["attention_mask"])


def test_cached_token_ids_equal_tokenize_captions(tokenizer):
    """Repeats, case, spacing, cuts at max_length, and a cache that fills up: the same ids and masks."""
    texts = ["a red circle", "A  Red circle", "the green square " * 6, "a red circle", "blue", ""]
    tokens = CaptionTokens(tokenizer, 8, capacity=3)
    for batch in (texts, texts[::-1], texts[2:]):
        expected = tokenize_captions(tokenizer, batch, max_length=8, return_tensors="np")
        ids, mask = tokens(batch)
        np.testing.assert_array_equal(ids, expected["input_ids"])
        np.testing.assert_array_equal(mask, expected["attention_mask"])
    assert len(tokens._ids) <= 3 + len(set(texts))


def test_a_worker_sends_the_batches_made_in_process(samples, tokenizer):
    """Batches built in shared memory in a worker equal those made in the calling process."""
    paths = samples[0]
    streams = [RegionStream(paths, options(workers=w, resample=True, seed=4), tokenizer, 40) for w in (0, 1)]
    got = []
    for stream in streams:
        batches = []
        for batch in make_loader(stream):
            batches.append(batch)
            if len(batches) == 3:
                break
        got.append(batches)
    for a, b in zip(*got):
        for name in ("images", "alphas", "input_ids", "attention_mask", "phrase_keys", "region_ids"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name
