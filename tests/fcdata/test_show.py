"""fc show draws real masks, not their boxes."""

from __future__ import annotations

import numpy as np

from fcdata import reader
from fcdata.show import render_sample
from tests.fcdata.test_segmasks import make_sample


def test_render_tints_the_mask_and_leaves_its_hole():
    """A ring-shaped mask: its pixels are tinted, the hole inside its box keeps the image colour."""
    height, width = 40, 40
    yy, xx = np.mgrid[:height, :width]
    distance = np.hypot(yy + 0.5 - 20, xx + 0.5 - 20)
    ring = (distance < 16) & (distance > 7)
    sample = reader.decode_sample(make_sample(1, np.array([[4.0, 4.0, 36.0, 36.0]]), [ring], height, width))
    picture = np.asarray(render_sample(sample, scale=1))
    gray = sample.image[20, 20]
    np.testing.assert_array_equal(picture[20, 20], gray)  # the hole
    assert np.abs(picture[20, 8].astype(int) - gray.astype(int)).max() > 30  # on the ring
