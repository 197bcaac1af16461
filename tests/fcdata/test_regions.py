import numpy as np
import pyarrow as pa

from fcdata import regions


def test_phrases_are_normalised_and_keyed_ignoring_case():
    """Whitespace runs, tabs and newlines collapse; equal-ignoring-case phrases share a key; empty -> -1."""
    raw = pa.array([" a  red\tball\n", "A red ball", "a red ball", "   ", "blue cup"])
    phrases = regions.normalise_phrases(raw, max_chars=200)
    assert phrases.text.to_pylist() == ["a red ball", "A red ball", "a red ball", "", "blue cup"]
    assert phrases.whitespace_fixed.tolist() == [True, False, False, True, False]
    assert phrases.keys[0] == phrases.keys[1] == phrases.keys[2] != phrases.keys[4]
    assert phrases.keys[3] == -1


def test_long_phrases_are_cut_at_a_word_boundary():
    """A phrase over the limit is cut after a whole word and flagged; short ones are untouched."""
    phrases = regions.normalise_phrases(pa.array(["one two three four", "short", "x" * 30]), max_chars=10)
    assert phrases.text.to_pylist() == ["one two", "short", "x" * 10]
    assert phrases.long_fixed.tolist() == [True, False, True]


def _filter(xywh, keys, size=(100, 80), scale=(1.0, 1.0), min_side=4.0, iou=0.7):
    return regions.filter_regions(
        np.asarray(xywh, np.float64).reshape(-1, 4), np.asarray(keys, np.int64),
        size[0], size[1], scale[0], scale[1], min_side, iou,
    )


def test_filter_gives_each_bad_region_its_reason():
    """Empty phrase, empty/negative/non-finite box, outside, too small and duplicate each get their code."""
    xywh = [
        [10, 10, 20, 20],  # kept
        [10, 10, 20, 20],  # empty phrase
        [10, 10, 0, 20],  # zero width
        [10, 10, 20, -5],  # negative height
        [np.nan, 10, 20, 20],  # not finite
        [150, 10, 20, 20],  # wholly right of the image
        [10, 10, 2, 2],  # too small
        [11, 10, 20, 20],  # same phrase as the first, IoU 0.9
        [11, 10, 20, 20],  # other phrase, same box: kept
    ]
    keys = [7, -1, 7, 7, 7, 7, 7, 7, 8]
    boxes, codes, clipped = _filter(xywh, keys)
    assert codes.tolist() == [
        regions.KEPT, regions.EMPTY_PHRASE, regions.EMPTY_BOX, regions.EMPTY_BOX, regions.EMPTY_BOX,
        regions.OUTSIDE_IMAGE, regions.TOO_SMALL, regions.DUPLICATE, regions.KEPT,
    ]
    assert boxes[0].tolist() == [10, 10, 30, 30]
    assert not clipped.any()


def test_filter_clips_scales_and_rounds_boxes_to_pixels():
    """A box partly outside is clipped to the image, scaled, then rounded to whole pixels."""
    boxes, codes, clipped = _filter([[-5, 70, 21, 20]], [1], size=(100, 80), scale=(0.5, 0.25), min_side=1.0)
    assert codes.tolist() == [regions.KEPT] and clipped.tolist() == [True]
    assert boxes[0].tolist() == [0, 18, 8, 20]  # x1 = 16 * 0.5, y0 = 17.5 rounds up, y1 = 20


def test_kept_boxes_are_never_empty_after_rounding():
    """A sub-pixel box that passes the size filter still covers one whole pixel, inside the image."""
    boxes, codes, _ = _filter([[99.8, 79.9, 0.1, 0.1], [10.2, 10.2, 0.3, 0.3]], [1, 2], min_side=0.0)
    assert codes.tolist() == [regions.KEPT, regions.KEPT]
    assert boxes.tolist() == [[99, 79, 100, 80], [10, 10, 11, 11]]


def test_duplicates_compare_only_with_kept_regions():
    """A region is a duplicate of an earlier *kept* one; dropping a too-small twin does not chain."""
    xywh = [[10, 10, 1, 1], [10, 10, 20, 20], [10, 10, 20, 21]]
    _, codes, _ = _filter(xywh, [3, 3, 3])
    assert codes.tolist() == [regions.TOO_SMALL, regions.KEPT, regions.DUPLICATE]


def test_objects_are_matched_within_their_own_image():
    """Each region gets the object of its image overlapping it most, or -1 where none overlaps."""
    region_xywh = np.array([[0, 0, 10, 10], [50, 50, 10, 10], [0, 0, 10, 10]], np.float64)
    object_xywh = np.array([[0, 0, 20, 20], [1, 1, 8, 8], [200, 200, 5, 5], [0, 0, 10, 10]], np.float64)
    # image 0: regions 0-1, objects 0-2; image 1: region 2, object 3
    best, iou = regions.match_objects(region_xywh, np.array([0, 2, 3]), object_xywh, np.array([0, 3, 4]))
    assert best.tolist() == [1, -1, 3]
    np.testing.assert_allclose(iou, [0.64, 0.0, 1.0], rtol=1e-6)
