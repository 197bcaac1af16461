"""Decode, crop, resize and flip a batch's images on the training device (LoaderOptions.decode =
"device"): the workers send each image's JPEG bytes with the crop they drew (fcdata.augment's
EncodedCrop) instead of pixels, and do everything else (regions, alphas, tokens) as usual.

On CUDA the JPEGs go through nvJPEG in one call (`torchvision.io.decode_jpeg(..., device="cuda")`;
torchvision is imported only here, only on this path). Elsewhere, so the path can be tested
without a GPU, the host decodes them (simplejpeg, the CPU path's decoder) and the same crop code
runs on the host.

Crop + resize is PIL's bilinear filter written as two resampling matrices per image (the same
triangle weights, the same float crop box, antialiased when shrinking), applied as batched matrix
products: out = Wy @ image @ Wx^T per channel. PIL computes in 8-bit fixed point with a rounded
intermediate, this in float32 with one rounding, so pixels differ from the CPU path by a level or
two at most (tested); alphas are made by the workers exactly as on the CPU path.
"""

from __future__ import annotations

import numpy as np
import torch


def split_jpegs(data: torch.Tensor, offsets: torch.Tensor) -> list[torch.Tensor]:
    """The batch's concatenated JPEG bytes -> one 1-D uint8 tensor per image (views, no copies)."""
    bounds = offsets.tolist()
    return [data[start:stop] for start, stop in zip(bounds[:-1], bounds[1:])]


def decode(jpegs: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """JPEG byte tensors -> 3 x H x W uint8 RGB tensors on `device`."""
    if device.type == "cuda":
        try:
            from torchvision.io import ImageReadMode, decode_jpeg
        except ImportError:
            from fcdata.errors import UserError

            raise UserError("data.decode = 'device' decodes with torchvision on CUDA: install the torchvision "
                            "that matches your torch, or use data.decode = 'cpu'") from None

        return decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=device)
    import simplejpeg

    return [torch.from_numpy(simplejpeg.decode_jpeg(j.numpy().tobytes())).permute(2, 0, 1).to(device) for j in jpegs]


def resample_matrices(starts: torch.Tensor, spans: torch.Tensor, lengths: torch.Tensor, size: int, longest: int) -> torch.Tensor:
    """B x size x longest float32: row i of image b holds PIL's bilinear weights of output pixel i
    over input pixels 0..lengths[b]-1 (zeros past them) for the crop [start, start + span)."""
    device = starts.device
    scale = (spans / size)[:, None, None]  # B x 1 x 1
    support = torch.clamp(scale, min=1.0)
    centres = starts[:, None, None] + (torch.arange(size, device=device, dtype=torch.float64)[None, :, None] + 0.5) * scale
    pixels = torch.arange(longest, device=device, dtype=torch.float64)[None, None, :] + 0.5
    weights = torch.clamp(1.0 - (pixels - centres).abs() / support, min=0.0)  # B x size x longest
    weights = weights * (pixels < lengths[:, None, None].to(torch.float64))
    # PIL normalises over the taps inside the image, so a window at the border is not darkened.
    return (weights / weights.sum(-1, keepdim=True).clamp(min=1e-12)).to(torch.float32)


def resized_crops(images: list[torch.Tensor], boxes: torch.Tensor, flips: torch.Tensor, size: int) -> torch.Tensor:
    """3 x H x W uint8 images (sizes may differ) -> N x 3 x size x size uint8: each cropped to its
    box (x0, y0, x1, y1, float pixels), resized, and mirrored where `flips`."""
    device = images[0].device
    heights = torch.tensor([i.shape[1] for i in images], device=device)
    widths = torch.tensor([i.shape[2] for i in images], device=device)
    padded = torch.zeros((len(images), 3, int(heights.max()), int(widths.max())), dtype=torch.float32, device=device)
    for index, image in enumerate(images):
        padded[index, :, : image.shape[1], : image.shape[2]] = image
    boxes = boxes.to(device=device, dtype=torch.float64)
    along_y = resample_matrices(boxes[:, 1], boxes[:, 3] - boxes[:, 1], heights, size, padded.shape[2])  # N x S x H
    along_x = resample_matrices(boxes[:, 0], boxes[:, 2] - boxes[:, 0], widths, size, padded.shape[3])  # N x S x W
    rows = torch.einsum("nsh,nchw->ncsw", along_y, padded)  # N x 3 x S x W
    out = torch.einsum("ncsw,ntw->ncst", rows, along_x)  # N x 3 x S x S
    flips = flips.to(device)
    out = torch.where(flips[:, None, None, None], out.flip(-1), out)
    return out.add_(0.5).floor_().clamp_(0, 255).to(torch.uint8)


def device_images(data: torch.Tensor, offsets: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor, size: int,
                  device: torch.device) -> torch.Tensor:
    """A batch's shipped JPEGs and crops -> N x 3 x size x size uint8 on `device`."""
    return resized_crops(decode(split_jpegs(data, offsets), device), boxes, flips, size)


def pack_jpegs(jpegs: list[bytes]) -> tuple[torch.Tensor, torch.Tensor]:
    """JPEG byte strings -> (one uint8 tensor of them all, N + 1 int64 offsets): one buffer to send
    between processes instead of N."""
    offsets = np.zeros(len(jpegs) + 1, np.int64)
    offsets[1:] = np.cumsum([len(j) for j in jpegs])
    return torch.frombuffer(bytearray(b"".join(jpegs)), dtype=torch.uint8), torch.from_numpy(offsets)
