"""fc eval's box-vs-mask rows: the same candidates with the box alpha and with the real mask."""

from __future__ import annotations


import numpy as np

from fcdata.shard import TarShardWriter
from fctrain.config import EVAL_METHODS, EvalOptions
from fctrain.evaluation.regions import METHOD_TITLES, load_eval_images
from tests.fcdata.test_segmasks import make_sample


def test_mask_alphas_differ_from_box_alphas_only_where_a_real_mask_is(tmp_path):
    """Regions with a real mask get it in mask_alphas (a ring has a hole the box has not);
    regions without keep the box alpha in both."""
    height, width = 48, 64
    yy, xx = np.mgrid[:height, :width]
    distance = np.hypot(yy + 0.5 - 22.5, xx + 0.5 - 22.5)
    ring = (distance < 17) & (distance > 8)
    boxes = np.array([[5, 5, 40, 40], [20, 10, 60, 46]], np.float64)
    writer = TarShardWriter(tmp_path / "val-00000.tar")
    for image_id, full in ((1, [ring, None]), (2, [None, None])):
        sample = make_sample(image_id, boxes, full, height, width)
        for name, data in sample.items():
            writer.write(f"{image_id:09d}.{name}", data)
    writer.close()
    masked, boxed = load_eval_images(EvalOptions(shards=str(tmp_path), max_images=2), 32)
    k = masked.phrases.index("thing 0")
    assert not np.array_equal(masked.mask_alphas[k], masked.alphas[k])
    assert masked.alphas[k][15, 11] == 255 and masked.mask_alphas[k][15, 11] == 0  # the ring's hole
    np.testing.assert_array_equal(masked.mask_alphas[1 - k], masked.alphas[1 - k])
    np.testing.assert_array_equal(boxed.mask_alphas, boxed.alphas)
    assert "focus_mask" in EVAL_METHODS and "focus_mask" in METHOD_TITLES
