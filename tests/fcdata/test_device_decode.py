"""decode = "device": workers send JPEG bytes and crops, the device decodes, crops, resizes and flips.
On CPU the same code runs with the host's decoder, so it is tested here against the CPU path."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from fcdata.device_decode import resample_matrices, resized_crops
from fcdata.loader import RegionStream, to_device
from fcdata.options import LoaderOptions
from fcdata.errors import UserError
from test_loader import batches_of, options  # the tokenizer fixture is tests/fcdata/conftest.py's

SIZE = 120  # above half these 160-224 px images: the CPU path decodes at full scale too


@pytest.fixture(scope="module")
def paths(make_shards):
    from fcdata.loader import resolve_shards

    return resolve_shards(str(make_shards(images=16, seed=9, shard_samples=8, val_fraction=0.0)), "train")


@pytest.mark.parametrize("workers", [0, 1])
def test_device_path_gives_the_cpu_paths_views(paths, tokenizer, workers):
    """Same seed: the same alphas, captions and ids bit for bit, and the same pixels within a level
    (PIL's 8-bit fixed point against one float rounding); flipped images included."""
    runs = {}
    for decode in ("cpu", "device"):
        stream = RegionStream(paths, options(resample=True, seed=2, workers=workers, decode=decode), tokenizer, SIZE)
        runs[decode] = batches_of(stream, limit=4)
    flipped = 0
    for cpu, device in zip(runs["cpu"], runs["device"]):
        assert device.images.numel() == 0 and device.jpeg_offsets.numel() == cpu.images.shape[0] + 1
        for name in ("alphas", "input_ids", "attention_mask", "phrase_keys", "region_ids", "image_index"):
            assert torch.equal(getattr(cpu, name), getattr(device, name)), name
        on_device = to_device(device, torch.device("cpu"))
        expected = to_device(cpu, torch.device("cpu"))
        # One grey level, normalised: 1 / 255 / CLIP's smallest std (0.261).
        assert (on_device.pixel_values - expected.pixel_values).abs().max() <= 1.01 / 255 / 0.2613
        assert torch.equal(on_device.alpha, expected.alpha)
        flipped += int(device.flips.sum())
    assert flipped > 0


def test_device_path_carries_the_relation_views_negatives(paths, tokenizer):
    """Relation views with decode = "device": their negatives are alphas and captions, made by the
    workers as on the CPU path (bit for bit); a swapped view's pixels are its own view's image."""
    runs = {}
    for decode in ("cpu", "device"):
        stream = RegionStream(paths, options(resample=True, seed=2, relation_ratio=0.5, decode=decode), tokenizer, SIZE)
        runs[decode] = batches_of(stream, limit=4)
    negatives = 0
    for cpu, device in zip(runs["cpu"], runs["device"]):
        for name in ("alphas", "input_ids", "region_ids", "negative_alphas", "negative_alpha_slot", "negative_alpha_keys",
                     "negative_input_ids", "negative_attention_mask", "negative_text_slot", "negative_text_keys"):
            assert torch.equal(getattr(cpu, name), getattr(device, name)), name
        on_device = to_device(device, torch.device("cpu"))
        assert torch.equal(on_device.negative_pixel_values, on_device.pixel_values[on_device.negative_alpha_slot])
        assert torch.equal(on_device.negative_alpha, to_device(cpu, torch.device("cpu")).negative_alpha)
        negatives += len(device.negative_alpha_slot)
    assert negatives > 0  # the case under test happened


def test_resampling_matrices_keep_flat_images_flat_and_crop_where_asked():
    """Rows sum to 1 (a flat image stays flat, borders too); a crop of the left half shows only it."""
    weights = resample_matrices(torch.tensor([0.0, 3.5]), torch.tensor([100.0, 20.0]), torch.tensor([100, 30]), 16, 100)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 16))
    assert weights[1, :, 30:].abs().max() == 0  # past the image's own length
    image = torch.zeros((3, 10, 40), dtype=torch.uint8)
    image[:, :, :20] = 200
    out = resized_crops([image], torch.tensor([[0.0, 0.0, 12.0, 10.0]]), torch.tensor([False]), 8)
    assert (out == 200).all()  # the filter's reach (1.5 px each side) stays inside the bright part
    # Output centres 11.25, 13.75, ... 28.75 (2.5 px apart, 2.5 px reach): the first 3 see only the
    # bright half, the last 3 only the dark one; mirrored, the other way round.
    crop = torch.tensor([[10.0, 0.0, 30.0, 10.0]])
    straight, mirrored = (resized_crops([image], crop, torch.tensor([flip]), 8) for flip in (False, True))
    assert (straight[..., :3] == 200).all() and (straight[..., 5:] == 0).all()
    assert torch.equal(mirrored, straight.flip(-1))


def test_cpu_paths_never_import_torchvision(paths, tokenizer):
    """torchvision is imported only to decode on CUDA (CI has none)."""
    code = (
        "import sys, torch; from fcdata.loader import RegionStream, to_device, make_loader; "
        "from fcdata.options import LoaderOptions; import fcdata.device_decode; "
        "assert 'torchvision' not in sys.modules, 'imported'"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0


def test_unknown_decode_is_a_one_line_error():
    with pytest.raises(UserError, match="data.decode"):
        LoaderOptions(decode="gpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_nvjpeg_batches_match_the_cpu_path_on_cuda(paths, tokenizer):
    """On CUDA (nvJPEG through torchvision): the same alphas bit for bit; pixels as two JPEG
    decoders differ (nvJPEG's IDCT and chroma upsampling are not libjpeg-turbo's): on average
    within a grey level, and nowhere a crop's or flip's worth (those move pixels by 29-111)."""
    pytest.importorskip("torchvision")
    device = torch.device("cuda")
    cpu, gpu = (
        batches_of(RegionStream(paths, options(resample=True, seed=5, decode=decode), tokenizer, SIZE), limit=2)
        for decode in ("cpu", "device")
    )
    for a, b in zip(cpu, gpu):
        expected, got = to_device(a, device), to_device(b, device)
        assert torch.equal(expected.alpha, got.alpha)
        levels = (expected.pixel_values - got.pixel_values).abs() * 255 * 0.2613  # grey levels (CLIP's smallest std: within 6%)
        assert levels.mean() < 1.0 and torch.quantile(levels.flatten().float()[:1_000_000], 0.999) < 12
