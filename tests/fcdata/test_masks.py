import io

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image

from fcdata import masks


def reference_binary(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pixels whose centre is in [x0, x1) x [y0, y1); a box thinner than a pixel keeps the pixel
    under its centre; everything clipped to the image."""
    out = np.zeros((len(boxes), height, width), np.uint8)
    for k, (x0, y0, x1, y1) in enumerate(boxes.astype(np.float64)):
        spans = []
        for low, high, size in ((x0, x1, width), (y0, y1, height)):
            all_centres = np.arange(-1000, 1000) + 0.5  # wider than any test box, not just the image
            if not ((all_centres >= low) & (all_centres < high)).any():
                inside = np.arange(size) == int(np.floor((low + high) / 2))
            else:
                centres = np.arange(size) + 0.5
                inside = (centres >= low) & (centres < high)
            spans.append(inside)
        out[k] = np.outer(spans[1], spans[0]) * 255
    return out


def reference_soft(boxes: np.ndarray, height: int, width: int, feather: float) -> np.ndarray:
    """Per axis a linear ramp of width min(feather, side) (at least 1) centred on each edge,
    quantised to uint8; the mask is the rounded product of the two quantised ramps."""
    out = np.zeros((len(boxes), height, width), np.uint8)
    for k, (x0, y0, x1, y1) in enumerate(boxes.astype(np.float64)):
        ramps = []
        for low, high, size in ((x0, x1, width), (y0, y1, height)):
            ramp_width = max(1.0, min(feather, high - low))
            centres = np.arange(size) + 0.5
            ramp = np.clip(np.minimum(centres - low, high - centres) / ramp_width + 0.5, 0, 1)
            ramps.append(np.floor(255.0 * ramp + 0.5).astype(np.uint32))
        out[k] = (np.outer(ramps[1], ramps[0]) + 127) // 255
    return out


coordinate = st.floats(-20, 60, allow_nan=False, width=32)


@st.composite
def box_sets(draw):
    count = draw(st.integers(0, 70))
    height = draw(st.integers(1, 40))
    width = draw(st.integers(1, 40))
    boxes = []
    for _ in range(count):
        x0, y0 = draw(coordinate), draw(coordinate)
        # Sub-pixel, edge-hugging and ordinary sizes.
        w = draw(st.one_of(st.floats(0.0625, 0.9375, width=32), st.floats(1, 50, width=32)))
        h = draw(st.one_of(st.floats(0.0625, 0.9375, width=32), st.floats(1, 50, width=32)))
        boxes.append((x0, y0, x0 + w, y0 + h))
    return np.array(boxes, np.float32).reshape(-1, 4), height, width


@settings(max_examples=150, deadline=None)
@given(box_sets())
def test_binary_rasteriser_matches_numpy_reference(case):
    """The numba binary rasteriser follows the documented pixel-centre rule, edges and tiny boxes included."""
    boxes, height, width = case
    np.testing.assert_array_equal(masks.rasterize_boxes(boxes, height, width), reference_binary(boxes, height, width))


@settings(max_examples=100, deadline=None)
@given(box_sets(), st.floats(1.0, 12.0))
# Found by CI: float32 arithmetic on the edges rounded this ramp value up by one.
@example((np.array([[-0.33333334, 0.0, 2.1666667, 0.5]], np.float32), 1, 1), 3.0)
def test_soft_rasteriser_matches_numpy_reference(case, feather):
    """The numba soft rasteriser equals the NumPy ramp formula, values in [0, 255]."""
    boxes, height, width = case
    np.testing.assert_array_equal(
        masks.rasterize_boxes(boxes, height, width, feather), reference_soft(boxes, height, width, feather)
    )


@settings(max_examples=100, deadline=None)
@given(box_sets(), st.sampled_from([0.0, 3.0]))
def test_profiles_png_round_trips_losslessly(case, feather):
    """Encoding the profiles to PNG and decoding them gives back exactly the same masks."""
    boxes, height, width = case
    if len(boxes) == 0:
        return
    rows, cols = masks.box_profiles(boxes, height, width, feather)
    data = masks.encode_profiles(rows, cols, binary=feather == 0.0)
    decoded_rows, decoded_cols = masks.decode_profiles(data, height)
    regions = np.arange(len(boxes))
    np.testing.assert_array_equal(
        masks.profiles_to_masks(decoded_rows, decoded_cols, regions), masks.profiles_to_masks(rows, cols, regions)
    )


def test_integer_boxes_give_exactly_their_pixels():
    """For integer boxes the binary mask is exactly x0..x1-1, y0..y1-1: the stored box is the mask."""
    boxes = np.array([[0, 0, 1, 1], [3, 2, 9, 7], [0, 5, 12, 8]], np.float32)
    got = masks.rasterize_boxes(boxes, 8, 12)
    for k, (x0, y0, x1, y1) in enumerate(boxes.astype(int)):
        expected = np.zeros((8, 12), np.uint8)
        expected[y0:y1, x0:x1] = 255
        np.testing.assert_array_equal(got[k], expected)


def test_soft_masks_reach_full_value_and_centre_ramp_on_the_edge():
    """A soft mask is 255 inside, ~50% at the box edge, 0 far outside; a thin box keeps a strong peak."""
    boxes = np.array([[10, 10, 30, 30], [5, 2, 6.5, 20]], np.float32)
    soft = masks.rasterize_boxes(boxes, 40, 40, 6.0)
    assert soft[0, 20, 20] == 255 and soft[0, 20, 0] == 0
    assert abs(int(soft[0, 20, 9]) - 128) <= 255 / 6  # pixel 9 centre is 0.5 px outside the edge
    assert soft[1].max() >= 0.8 * 255  # the ramp narrows to the 1.5 px side instead of 6 px


@pytest.mark.parametrize("dtype", [np.bool_, np.uint8, np.uint16])
@pytest.mark.parametrize("shape", [(1, 1), (3, 9), (17, 8), (40, 77)])
@pytest.mark.parametrize("up_filter", [True, False])
def test_png_encoder_round_trips_through_pil(dtype, shape, up_filter):
    """Our PNG writer produces standard PNGs that PIL decodes to the same pixels."""
    rng = np.random.default_rng(2)
    if dtype == np.bool_:
        pixels = rng.random(shape) < 0.3
    else:
        pixels = rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)
    decoded = np.asarray(Image.open(io.BytesIO(masks.encode_png(pixels, up_filter=up_filter))))
    np.testing.assert_array_equal(decoded, pixels)


@pytest.mark.parametrize("feather", [0.0, 4.0])
def test_documented_pil_numpy_recipe_reads_the_profiles(feather):
    """The module docstring's PIL + NumPy recipe recovers the masks without fcdata."""
    boxes = np.array([[3, 4, 20, 18], [10, 0, 31, 9.5], [0, 0, 2, 2]], np.float32)
    rows, cols = masks.box_profiles(boxes, 24, 32, feather)
    data = masks.encode_profiles(rows, cols, binary=feather == 0.0)
    height = 24
    p = np.asarray(Image.open(io.BytesIO(data)))
    p = p.astype(np.uint16) * 255 if p.dtype == bool else p.astype(np.uint16)
    recovered = (p[:, :height, None] * p[:, None, height:] + 127) // 255
    np.testing.assert_array_equal(recovered, masks.rasterize_boxes(boxes, 24, 32, feather))


def test_encoders_reject_unsupported_input():
    """Wrong dtypes, empty arrays and zero regions fail loudly instead of writing a broken PNG."""
    with pytest.raises(ValueError):
        masks.encode_png(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError):
        masks.encode_png(np.zeros((0, 4), np.uint8))
    with pytest.raises(ValueError):
        masks.encode_profiles(np.zeros((0, 4), np.uint8), np.zeros((0, 5), np.uint8), binary=True)
