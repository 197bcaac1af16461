"""The demo's pieces that are not the pipeline itself: pretraining pairs and the thread setting."""

import io
import json
import random

import numpy as np
import torch
from PIL import Image

from fcdata import keys
from fcdata.transforms import letterbox
from fctrain.demo import one_torch_thread
from fctrain.pretrain import PretrainOptions, _sample_crops


def _sample(pixels: np.ndarray) -> dict:
    encoded = io.BytesIO()
    Image.fromarray(pixels).save(encoded, format="PNG")  # lossless: the whole-image pair can be compared exactly
    meta = {"regions": {"phrase": ["a red circle", "a blue square", "A red circle"], "box": [[0, 0, 20, 20], [30, 10, 60, 40], [2, 2, 22, 22]]}}
    return {keys.META: json.dumps(meta).encode(), keys.IMAGE: encoded.getvalue()}


def test_pretraining_adds_whole_images_only_when_asked():
    """full_image_ratio = 1 adds one whole-image pair per image, captioned with one of its distinct
    phrases; 0 (the default) gives crops only."""
    pixels = np.random.default_rng(0).integers(0, 255, (40, 64, 3), dtype=np.uint8)
    whole = letterbox(pixels, np.zeros((0, 1, 1), np.uint8), 32)[0]
    crops = _sample_crops(_sample(pixels), random.Random(0), 32, PretrainOptions(crops_per_image=4))
    assert len(crops) == 2 and not any(np.array_equal(c, whole) for c, _ in crops)  # two distinct phrases
    pairs = _sample_crops(_sample(pixels), random.Random(0), 32, PretrainOptions(crops_per_image=4, full_image_ratio=1.0))
    assert len(pairs) == 3 and np.array_equal(pairs[-1][0], whole)
    assert pairs[-1][1] in ("a red circle", "a blue square")


def test_one_torch_thread_is_undone_afterwards():
    """The demo's single intra-op thread does not leak into the caller's process."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with one_torch_thread():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
