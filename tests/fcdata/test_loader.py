import io
import json
import random
import tarfile
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from fcdata import keys, masks
from fcdata.augment import SampleRegions, eval_view, mirror_phrase, train_views
from fcdata.errors import UserError
from fcdata.loader import (
    _TENSOR_FIELDS, LoaderPosition, Prefetcher, RegionStream, make_loader, phrase_key, resolve_shards,
)
from fcdata.options import LoaderOptions
from fcdata.reader import read_shard
from fcdata.tarformat import iter_shard
from fcdata.transforms import letterbox, normalize_alphas, normalize_images

SIZE = 64  # model input size in these tests: small keeps them fast


@pytest.fixture(scope="module")
def shards(make_shards):
    """Train shards of 4 images each from a small generated dataset, and the train image ids."""
    paths = resolve_shards(str(make_shards(images=40, seed=7, shard_samples=4, val_fraction=0.1)), "train")
    ids = {int(s[keys.KEY]) for path in paths for s in iter_shard(path)}
    return paths, ids


def options(**changes) -> LoaderOptions:
    base = dict(batch_size=6, regions_per_image=2, workers=0, shuffle_buffer=5, resample=False)
    base.update(changes)
    return LoaderOptions(**base)


def batches_of(stream: RegionStream, limit: int | None = None) -> list:
    out = []
    for batch in make_loader(stream):
        out.append(batch)
        if limit is not None and len(out) == limit:
            break
    return out


def image_ids(batch) -> list[int]:
    """The id of each image of the batch (one per image, not per view)."""
    first_view = torch.unique_consecutive(batch.image_index, return_counts=True)[1].cumsum(0) - 1
    return batch.image_ids[first_view].tolist()


@pytest.mark.parametrize("workers, world", [(0, 1), (0, 3), (2, 1), (2, 2)])
def test_exactly_once_covers_every_image_once(shards, tokenizer, workers, world):
    """Exactly-once mode reads every image exactly once across all ranks and workers."""
    paths, all_ids = shards
    seen: Counter[int] = Counter()
    for rank in range(world):
        stream = RegionStream(paths, options(workers=workers), tokenizer, SIZE, rank=rank, world=world)
        for batch in batches_of(stream):
            seen.update(image_ids(batch))
    assert set(seen) == all_ids
    assert max(seen.values()) == 1


def test_batches_hold_same_image_regions_with_distinct_phrases(shards, tokenizer):
    """Each image gives regions_per_image views with distinct phrases; batches have exactly batch_size views."""
    paths, _ = shards
    batches = batches_of(RegionStream(paths, options(resample=True), tokenizer, SIZE), limit=4)
    for batch in batches:
        assert len(batch) == 6
        assert batch.images.shape == (3, 3, SIZE, SIZE) and batch.images.dtype == torch.uint8
        assert batch.alphas.shape == (6, 1, SIZE, SIZE) and batch.alphas.dtype == torch.uint8
        assert batch.input_ids.shape[0] == 6 and batch.attention_mask.shape == batch.input_ids.shape
        for image in range(3):
            keys_of_image = batch.phrase_keys[batch.image_index == image]
            assert len(keys_of_image) == 2 and keys_of_image[0] != keys_of_image[1]


def test_same_seed_same_batches_other_seed_other_batches(shards, tokenizer):
    """The stream is a function of the seed: repeatable, and a new seed changes it."""
    paths, _ = shards

    def run(seed):
        return batches_of(RegionStream(paths, options(resample=True, seed=seed), tokenizer, SIZE), limit=3)

    first, again, other = run(1), run(1), run(2)
    for a, b in zip(first, again):
        assert torch.equal(a.images, b.images) and torch.equal(a.alphas, b.alphas)
        assert torch.equal(a.input_ids, b.input_ids)
    assert not all(torch.equal(a.images, c.images) for a, c in zip(first, other))


@pytest.mark.parametrize("workers, relation_ratio", [(0, 0.0), (2, 0.0), (2, 0.5)])
def test_resuming_from_a_position_continues_the_same_stream(shards, tokenizer, workers, relation_ratio):
    """After n batches, a new loader started from the saved position yields exactly batch n+1, n+2...
    (relation views and their hard negatives included)."""
    paths, _ = shards
    opts = options(resample=True, workers=workers, seed=3, relation_ratio=relation_ratio)
    reference = batches_of(RegionStream(paths, opts, tokenizer, SIZE), limit=7)
    position = LoaderPosition(emitted=[0] * max(1, workers))
    for batch in reference[:4]:
        position.advance(batch)
    restored = LoaderPosition()
    restored.load_state_dict(json.loads(json.dumps(position.state_dict())))
    resumed = batches_of(RegionStream(paths, opts, tokenizer, SIZE, position=restored), limit=3)
    for expected, got in zip(reference[4:], resumed):
        for name in _TENSOR_FIELDS:
            assert torch.equal(getattr(expected, name), getattr(got, name)), name
    if relation_ratio:
        assert sum(len(b.negative_alpha_slot) for b in reference) > 0  # the case under test happened


def test_resume_with_another_worker_count_is_refused(shards, tokenizer):
    """A position only replays with the worker count it was saved with; anything else is a clear error."""
    paths, _ = shards
    with pytest.raises(UserError, match="data.workers = 2"):
        RegionStream(paths, options(workers=1), tokenizer, SIZE, position=LoaderPosition(emitted=[0, 0]))


def test_evaluation_view_is_the_whole_image_letterboxed(shards, tokenizer):
    """train_augment=False: whatever the seed (and with flip on), every view shows the whole image
    padded to a square, and its alpha is its own region's letterboxed mask: no crop, no flip."""
    paths, _ = shards
    stored = {sample.meta["image_id"]: sample for path in paths for sample in read_shard(path)}
    chosen = {}
    for seed in (0, 1):
        views = 0
        for batch in batches_of(RegionStream(paths, options(train_augment=False, flip=True, seed=seed), tokenizer, SIZE)):
            for view in range(len(batch)):
                sample = stored[int(batch.image_ids[view])]
                region = sample.region_ids.index(int(batch.region_ids[view]))
                image, alpha = letterbox(sample.image, sample.masks[region : region + 1], SIZE)
                got = batch.images[batch.image_index[view]].permute(1, 2, 0).numpy()
                # A crop or flip moves pixels by 29-111 levels on average (the evaluation view decodes
                # at the stored scale, as the reader does; it once decoded at a reduced DCT scale, <= 3.8).
                assert np.abs(got.astype(int) - image).mean() < 8
                # Alphas are resampled from profiles, the same geometry: none of the 1-24% of pixels
                # a crop or flip gets wrong.
                assert (np.abs(batch.alphas[view, 0].numpy().astype(int) - alpha[0]) > 127).mean() <= 0.002
                chosen.setdefault((seed, sample.meta["image_id"]), set()).add(region)
                views += 1
        assert views == 2 * len(stored)
    assert all(chosen[0, image_id] == chosen[1, image_id] for image_id in stored)  # not seed-dependent


def synthetic_sample(width: int, height: int, boxes: list[tuple[int, int, int, int]], phrases: list[str]) -> dict:
    """A shard sample whose region k is painted in colour k on a black image."""
    image = np.zeros((height, width, 3), np.uint8)
    palette = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        image[y0:y1, x0:x1] = palette[k % len(palette)]
    jpg = io.BytesIO()
    Image.fromarray(image).save(jpg, "PNG")  # lossless, so colours stay exact
    rows, cols = masks.box_profiles(np.array(boxes, np.float32).reshape(-1, 4), height, width, 0.0)
    meta = {
        "image_id": 1, "width": width, "height": height,
        "regions": {"region_id": list(range(len(boxes))), "phrase": phrases, "box": [list(b) for b in boxes]},
        "mask": {"layout": keys.MASK_LAYOUT_SEPARABLE},
    }
    return {keys.IMAGE: jpg.getvalue(), keys.MASK_PROFILES: masks.encode_profiles(rows, cols, True), keys.META: json.dumps(meta).encode()}


@settings(max_examples=60, deadline=None)
@given(
    st.integers(60, 200), st.integers(60, 200), st.integers(0, 2**32 - 1),
    st.floats(0.1, 0.6), st.floats(0.1, 0.6), st.floats(0.0, 0.4), st.floats(0.0, 0.4),
)
def test_alpha_stays_on_its_region_through_crop_resize_and_flip(width, height, seed, fw, fh, fx, fy):
    """After a random crop, resize and flip, the alpha covers the pixels that show its region (and nothing else)."""
    x0, y0 = int(fx * width), int(fy * height)
    box = (x0, y0, min(width, x0 + max(8, int(fw * width))), min(height, y0 + max(8, int(fh * height))))
    sample = synthetic_sample(width, height, [box], ["the red box on the left"])
    opts = LoaderOptions(regions_per_image=1, full_image_ratio=0.0, min_visible=0.6, batch_size=1)
    views = train_views(sample, 1, SIZE, opts, random.Random(seed))
    red = (views.image[..., 0] > 200) & (views.image[..., 1] < 60) & (views.image[..., 2] < 60)
    inside = views.alphas[0] >= 128
    assert inside.any()
    # Edges may differ by a pixel of resampling; the cores must agree.
    core_mismatch = (red ^ inside) & ~_edge_band(inside)
    assert core_mismatch.sum() <= 0.02 * inside.sum() + 2
    if views.phrases[0] != "the red box on the left":
        assert views.phrases[0] == "the red box on the right"  # flipped


def _edge_band(mask: np.ndarray) -> np.ndarray:
    """Pixels within one of the mask's boundary, the image border included (what lies beyond the
    crop is unknown, so a region cut by the border has an edge there too)."""
    padded = np.pad(mask, 1, constant_values=False)
    grown = padded[:-2, 1:-1] | padded[2:, 1:-1] | padded[1:-1, :-2] | padded[1:-1, 2:] | mask
    shrunk = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:] & mask
    return grown & ~shrunk


def test_views_of_one_image_share_the_crop_and_differ_in_alpha():
    """Two regions of one image: one crop of the image, two alphas each on its own region."""
    sample = synthetic_sample(120, 100, [(5, 5, 50, 50), (60, 40, 115, 95)], ["red one", "green one"])
    opts = LoaderOptions(regions_per_image=2, full_image_ratio=0.0, min_visible=1.0, batch_size=2)
    views = train_views(sample, 2, SIZE, opts, random.Random(11))
    assert views.alphas.shape == (2, SIZE, SIZE) and views.image.shape == (SIZE, SIZE, 3)
    for alpha, phrase in zip(views.alphas, views.phrases):
        colour = views.image[alpha >= 200].mean(axis=0)
        assert colour[0 if phrase == "red one" else 1] > 180


def test_whole_image_view_uses_the_covering_region_phrase():
    """With full_image_ratio=1, a region covering most of the image supplies a whole-image view: all-ones alpha."""
    sample = synthetic_sample(100, 80, [(0, 0, 100, 80), (10, 10, 30, 30), (50, 40, 90, 70)], ["a scene", "red", "green"])
    opts = LoaderOptions(regions_per_image=2, full_image_ratio=1.0, batch_size=2, flip=False)
    views = train_views(sample, 2, SIZE, opts, random.Random(0))
    assert -1 in views.region_ids
    whole = views.region_ids.index(-1)
    assert views.phrases[whole] == "a scene" and (views.alphas[whole] == 255).all()


def test_evaluation_view_letterboxes_image_and_alpha_together():
    """The evaluation view pads the image to a square (zeros) and the alphas move with it."""
    sample = synthetic_sample(120, 60, [(0, 0, 60, 60)], ["red"])
    views = eval_view(sample, SIZE, max_regions=1)
    assert views.image[: SIZE // 4 - 2].max() == 0 and views.image[-(SIZE // 4 - 2):].max() == 0  # padding rows
    red = views.image[..., 0] > 200
    assert ((views.alphas[0] >= 128) ^ red).sum() <= 2 * SIZE


def test_eval_view_is_the_inference_letterbox_of_the_stored_sample(shards):
    """eval_view's image is exactly fcdata.transforms.letterbox (the API's preprocessing) of the
    stored image, its alphas those of the regions asked for, its view boxes the boxes moved alike."""
    paths, _ = shards
    raw = next(iter_shard(paths[0]))
    sample = read_shard(paths[0]).__next__()
    view = eval_view(raw, SIZE)
    np.testing.assert_array_equal(view.image, letterbox(sample.image, sample.masks[:0], SIZE)[0])
    distinct = SampleRegions.of(sample.meta).distinct
    assert view.regions.tolist() == distinct and view.phrases == [sample.phrases[k] for k in distinct]
    assert view.alphas is view.box_alphas  # box layout: no real masks
    subset = eval_view(raw, SIZE, regions=[distinct[-1], distinct[0]])
    np.testing.assert_array_equal(subset.alphas, view.alphas[[len(distinct) - 1, 0]])
    _, reference = letterbox(sample.image, sample.masks[[distinct[0]]], SIZE)
    # Profiles resampled in floats vs PIL's two rounded passes: edge pixels may differ by a level or two.
    assert np.abs(subset.alphas[1].astype(int) - reference[0]).max() <= 2
    side = max(sample.image.shape[:2])
    assert np.allclose(view.view_boxes[0] * side / SIZE, sample.boxes[distinct[0]] + [
        (side - sample.image.shape[1]) // 2, (side - sample.image.shape[0]) // 2] * 2)
    with pytest.raises(IndexError):
        eval_view(raw, SIZE, regions=[len(sample.phrases)])


def test_train_views_need_an_rng():
    """No silent switch to the evaluation view: train_views without an RNG is an error."""
    sample = synthetic_sample(120, 60, [(0, 0, 60, 60)], ["red"])
    with pytest.raises(TypeError, match="eval_view"):
        train_views(sample, 1, SIZE, LoaderOptions(batch_size=1, regions_per_image=1), None)


def test_mirrored_phrases_swap_left_and_right():
    """Flipping the image swaps the words left and right, whole words only, keeping case."""
    assert mirror_phrase("the Left cup, right of the leftover plate") == "the Right cup, left of the leftover plate"


def test_normalisation_matches_clip_and_alpha_clip_constants():
    """uint8 -> float normalisation: CLIP mean/std per channel; alpha (a/255 - 0.5)/0.26."""
    white = normalize_images(torch.full((1, 3, 2, 2), 255, dtype=torch.uint8))
    assert torch.allclose(white[0, :, 0, 0], torch.tensor([(1 - 0.48145466) / 0.26862954, (1 - 0.4578275) / 0.26130258, (1 - 0.40821073) / 0.27577711]))
    alphas = normalize_alphas(torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1)).flatten()
    assert torch.allclose(alphas, torch.tensor([-0.5 / 0.26, 0.5 / 0.26]))


def test_prefetcher_gives_normalised_views_on_the_device(shards, tokenizer):
    """The prefetcher gathers each view's image and normalises pixels and alphas (CPU path here)."""
    paths, _ = shards
    loader = make_loader(RegionStream(paths, options(resample=True), tokenizer, SIZE))
    batch = next(iter(Prefetcher(loader, torch.device("cpu"))))
    assert batch.pixel_values.shape == (6, 3, SIZE, SIZE) and batch.pixel_values.dtype == torch.float32
    expected = normalize_images(batch.source.images)[batch.source.image_index]
    assert torch.equal(batch.pixel_values, expected)
    assert torch.equal(batch.alpha, normalize_alphas(batch.source.alphas))


def test_corrupt_samples_and_shards_are_counted_not_fatal(shards, tokenizer, tmp_path):
    """A sample with a broken JPEG and a truncated shard are skipped and reported in the batches."""
    paths, _ = shards
    broken = tmp_path / "broken.tar"
    with tarfile.open(paths[0]) as source, tarfile.open(broken, "w") as target:
        for number, member in enumerate(source):
            data = source.extractfile(member).read()
            if number == 0:
                data = b"not a jpeg"
            member.size = len(data)
            target.addfile(member, io.BytesIO(data))
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(open(paths[1], "rb").read()[:3000])
    stream = RegionStream([str(broken), str(truncated), *paths[2:]], options(batch_size=2, regions_per_image=1), tokenizer, SIZE)
    skipped: Counter[str] = Counter()
    for batch in make_loader(stream):
        skipped.update(batch.skipped)
    assert skipped["bad_image"] == 1
    assert skipped["truncated_shard"] == 1


def test_shard_specs_resolve_and_missing_shards_are_user_errors(shards, tmp_path):
    """Folders, brace patterns and comma lists resolve to files; a missing shard is a UserError."""
    paths, _ = shards
    first = paths[0]
    pattern = first.replace("train-00000", "train-{00000..00001}")
    assert resolve_shards(pattern) == paths[:2]
    assert resolve_shards(f"{paths[0]},{paths[1]}") == paths[:2]
    with pytest.raises(UserError, match="shard not found"):
        resolve_shards(first.replace("00000", "99999"))
    with pytest.raises(UserError, match="no train shards"):
        resolve_shards(str(tmp_path))


def test_phrase_keys_ignore_case_and_surrounding_space():
    """Duplicate captions are recognised whatever their case, so the loss can treat them as one."""
    assert phrase_key(" Red Ball") == phrase_key("red ball") != phrase_key("red balls")


def test_sample_regions_dedupe_phrases_and_find_the_covering_region():
    """SampleRegions keeps the first region of each phrase and finds a covering region."""
    meta = {"image_id": 3, "width": 10, "height": 10, "regions": {"region_id": [1, 2, 3], "phrase": ["A", "a", "b"], "box": [[0, 0, 10, 10], [0, 0, 2, 2], [1, 1, 3, 3]]}}
    regions = SampleRegions.of(meta, 0.8)
    assert regions.distinct == [0, 2] and regions.cover == 0
