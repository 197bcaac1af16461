"""fc show's pictures: real masks drawn, not their boxes; captions readable."""

from __future__ import annotations

import numpy as np

from fcdata import reader
from fcdata.reader import RegionSample
from fcdata.show import PALETTE, render_sample
from tests.fcdata.test_segmasks import make_sample


def test_captions_are_drawn_large_enough_to_read():
    """Caption letters are a real TrueType face sized to the picture's scale (the old bitmap
    font was 11 px in a 3000-px grid); legend text is dark, with its colour in a swatch beside
    it (light palette colours are unreadable as text on white)."""
    image = np.full((40, 60, 3), 128, np.uint8)
    masks = np.zeros((2, 40, 60), np.uint8)
    meta = {"image_id": 7, "regions": {"box": [[0, 0, 10, 10], [5, 5, 20, 15]], "region_id": [1, 2], "phrase": ["a", "b"]}}
    scale = 3
    picture = np.asarray(render_sample(RegionSample("7", image, masks, ["yellow Hg", "second"], meta), scale=scale))
    caption = picture[40 * scale :]
    ink_rows = np.flatnonzero((caption.max(axis=2) < 100).any(axis=1))  # dark text
    first_line = ink_rows[: np.argmax(np.diff(ink_rows) > 1) + 1] if (np.diff(ink_rows) > 1).any() else ink_rows
    letter_height = first_line[-1] - first_line[0] + 1
    assert letter_height >= 0.6 * 14 * scale  # "image 7: 2 regions": ascenders to the baseline
    swatch = np.all(caption == PALETTE[0], axis=2)
    assert swatch.sum() >= (14 * scale // 2) ** 2  # a filled square, not thin coloured text


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
