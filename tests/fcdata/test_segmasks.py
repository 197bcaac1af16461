"""Layout runs-v1: arbitrary masks round-trip losslessly, through the reader and the README recipe."""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from fcdata import keys, masks, reader, segmasks
from fcdata.tarformat import TarShardWriter


def random_masks(rng: np.random.Generator, count: int, height: int, width: int) -> list[np.ndarray]:
    """Binary masks with holes, several runs per row and pixels on the image edges."""
    out = []
    for _ in range(count):
        x0, y0 = rng.integers(0, width - 2), rng.integers(0, height - 2)
        x1, y1 = rng.integers(x0 + 1, width + 1), rng.integers(y0 + 1, height + 1)
        mask = np.zeros((height, width), bool)
        mask[y0:y1, x0:x1] = rng.random((y1 - y0, x1 - x0)) < 0.6
        out.append(mask)
    return out


def make_sample(image_id: int, boxes: np.ndarray, full_masks: list, height: int, width: int, shared=None) -> dict[str, bytes]:
    """A shard sample as `fc shard` lays it out, with real masks where given."""
    from PIL import Image

    rows, cols = masks.box_profiles(boxes.astype(np.float32), height, width, 0.0)
    members, mask_fields = segmasks.encode_masks(full_masks, [segmasks.SOURCE_COCO] * len(full_masks), shared)
    layout = keys.MASK_LAYOUT_RUNS if members else keys.MASK_LAYOUT_SEPARABLE
    meta = {
        "image_id": image_id, "width": width, "height": height,
        "regions": {"region_id": list(range(len(boxes))), "phrase": [f"thing {k}" for k in range(len(boxes))], "box": boxes.tolist()},
        "mask": dict(layout=layout, **mask_fields),
    }
    jpeg = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 128, np.uint8)).save(jpeg, "JPEG")
    return {
        keys.IMAGE: jpeg.getvalue(), keys.MASK_PROFILES: masks.encode_profiles(rows, cols, True),
        **members, keys.META: json.dumps(meta).encode(),
    }


def expected_masks(boxes, full_masks, height, width) -> np.ndarray:
    boxed = masks.rasterize_boxes(boxes, height, width)
    return np.stack([boxed[k] if m is None or not m.any() else np.where(m, 255, 0).astype(np.uint8) if m.dtype == bool else m for k, m in enumerate(full_masks)])


def test_binary_masks_round_trip_through_the_reader():
    """Every region's decoded mask equals what was stored; regions without one keep their box."""
    rng = np.random.default_rng(1)
    height, width = 37, 53
    real = random_masks(rng, 6, height, width)
    full = real[:3] + [None] + real[3:] + [np.zeros((height, width), bool)]
    boxes = np.array([[1, 2, 30, 20]] * len(full), np.float64)
    sample = make_sample(5, boxes, full, height, width)
    meta = reader.decode_meta(sample)
    assert meta["mask"]["mask_of"][3] == -1 and meta["mask"]["mask_of"][-1] == -1  # None and empty: box
    decoded = reader.decode_masks(sample, meta)
    np.testing.assert_array_equal(decoded, expected_masks(boxes, full, height, width))
    chosen = [6, 0, 3]
    np.testing.assert_array_equal(reader.decode_masks(sample, meta, chosen), decoded[chosen])
    assert reader.decode_sample(sample).mask_sources == ["coco"] * 3 + ["box"] + ["coco"] * 3 + ["box"]


def test_graded_masks_are_stored_as_they_are():
    """A 0-255 mask (e.g. a soft SAM probability) is kept at full 8-bit precision."""
    rng = np.random.default_rng(2)
    graded = (rng.random((20, 30)) * 255).astype(np.uint8)
    graded[:3] = 0
    full = [graded, random_masks(rng, 1, 20, 30)[0]]
    sample = make_sample(1, np.array([[0, 0, 30, 20]] * 2, np.float64), full, 20, 30)
    meta = reader.decode_meta(sample)
    assert meta["mask"]["graded"] and keys.MASK_CROPS in sample and keys.MASK_RUNS not in sample
    decoded = reader.decode_masks(sample, meta)
    np.testing.assert_array_equal(decoded[0], graded)
    np.testing.assert_array_equal(decoded[1], full[1].astype(np.uint8) * 255)


def test_shared_ids_store_a_mask_once():
    """Regions of one COCO instance point at one stored mask."""
    rng = np.random.default_rng(3)
    one = random_masks(rng, 1, 16, 16)[0]
    members, fields = segmasks.encode_masks([one, one, None], ["coco"] * 3, shared=[7, 7, -1])
    assert fields["mask_of"] == [0, 0, -1] and len(fields["rects"]) == 4
    assert set(members) == {keys.MASK_RUNS}


def test_no_real_mask_writes_nothing():
    """Box-only regions leave the sample in the box layout."""
    assert segmasks.encode_masks([None, np.zeros((4, 4), bool)], ["box", "coco"]) == ({}, {})


def test_numba_decoder_matches_a_numpy_reference():
    """The fast decoder equals decoding the PNG with PIL and the switches with NumPy."""
    from PIL import Image

    rng = np.random.default_rng(4)
    crops = [m[: 10 + 3 * i, : 12 + 5 * i] for i, m in enumerate(random_masks(rng, 5, 40, 60))]
    crops = [c for c in crops if c.any()]
    data = segmasks.encode_runs(crops)
    rects = np.array([[0, 0, c.shape[1], c.shape[0]] for c in crops])
    stacked = np.asarray(Image.open(io.BytesIO(data))).astype(np.int64)
    assert stacked.shape[0] == sum(c.shape[0] for c in crops)
    top = 0
    fast = segmasks.decode_mask_crops(data, rects, False, list(range(len(crops))))
    for crop, decoded in zip(crops, fast):
        rows = stacked[top : top + crop.shape[0]]
        top += crop.shape[0]
        toggles = np.zeros((crop.shape[0], crop.shape[1] + 1), np.int64)
        np.add.at(toggles, (np.arange(len(rows))[:, None], rows), 1)  # zero pairs cancel
        reference = (np.cumsum(toggles, axis=1)[:, :-1] % 2).astype(bool)
        np.testing.assert_array_equal(reference, crop)
        np.testing.assert_array_equal(decoded, crop.astype(np.uint8) * 255)


def test_a_mask_png_that_does_not_match_its_rectangles_is_an_error():
    """A corrupt sample raises (the loader counts and skips it) rather than decoding garbage."""
    rng = np.random.default_rng(5)
    data = segmasks.encode_runs(random_masks(rng, 2, 10, 10))
    with pytest.raises(ValueError, match="rectangles"):
        segmasks.decode_mask_crops(data, np.array([[0, 0, 10, 3]]), False, [0])


def readme_block(marker: str) -> str:
    """The README's Python block that contains `marker`."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if marker in b]
    return block


@pytest.mark.parametrize("last", ["binary", "graded"])
def test_readme_recipe_reads_segmentation_masks(tmp_path, last):
    """The README's PIL + NumPy recipe gives the reader's masks, binary and graded."""
    rng = np.random.default_rng(6)
    height, width = 24, 40
    boxes = np.array([[2, 3, 20, 18], [5, 1, 39, 23], [0, 0, 40, 24]], np.float64)
    binary = random_masks(rng, 2, height, width) + [None]
    graded = [(rng.random((height, width)) * 255).astype(np.uint8), None, None]
    samples = [make_sample(1, boxes, binary, height, width), make_sample(2, boxes, graded, height, width)]
    samples = samples if last == "graded" else samples[::-1]
    writer = TarShardWriter(tmp_path / "train-00000.tar")
    for sample in samples:
        key = f"{json.loads(sample[keys.META])['image_id']:09d}"
        for extension, data in sample.items():
            writer.write(f"{key}.{extension}", data)
    writer.close()
    previous = os.getcwd()
    os.chdir(tmp_path)
    try:
        namespace: dict = {}
        exec(readme_block('!= "runs-v1"'), namespace)
    finally:
        os.chdir(previous)
    final = samples[-1]  # the recipe's loop leaves the last sample's masks in `masks`
    np.testing.assert_array_equal(namespace["masks"], reader.decode_masks(final, reader.decode_meta(final)))
    np.testing.assert_array_equal(namespace["masks"][0], graded[0] if last == "graded" else binary[0] * np.uint8(255))
