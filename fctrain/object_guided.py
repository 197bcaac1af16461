"""Object-Guided CLIP: the second architecture of the model family (`model.architecture =
"object_guided"`), beside Alpha-CLIP's alpha patch conv (fctrain.model.RGBAClip).

The mask guides the image embedding through two small conv paths fused with CLIP's own
spatial features:

    object path   the image with the mask applied (pixels x a, a in [0, 1]: outside the region
                  the pixels are CLIP's mean colour, 0 after normalisation)
                  3 -> 32 -> 64 channels, two 3x3 convs of stride 2 with GELU  (S/4 x S/4)
    mask path     the mask a itself: 1 -> 16 -> 32 channels, the same two convs (S/4 x S/4)
    CLIP features the patch tokens of the vision tower's last block (with LoRA), through its
                  post-LayerNorm: D channels on the g x g patch grid (g = S / patch)
    fusion        both paths average-pooled to the g x g grid, concatenated with CLIP's features
                  (D + 96 channels), a 1x1 conv to D, GELU, global average pooling
    projection    LayerNorm and a linear D -> projection_dim, zero-initialised, ADDED to CLIP's
                  own projected class token

Why these choices:
- CLIP's features from the last block (not an earlier one): the LoRA adapters of every block then
  shape them, and after the post-LayerNorm they are on the scale the class token is projected
  from. An earlier block would leave the later adapters nothing to adapt for the fusion.
- Widths 32/64 and 16/32: the paths only have to say where the region is and what colour and
  texture it has at 1/4 resolution; the semantics come from CLIP. At ViT-B/16 and 224 px they
  cost ~0.22 GMAC (most of it the 1x1 fusion) beside the tower's ~17.5, and the whole guide is
  1.08M parameters (D = 768; measured with torch.utils.flop_counter).
- Stride-2 convs then average pooling to the patch grid (rather than one patch-sized stride):
  any patch size works (14 or 16) and each grid cell sees the mask's edge at 4 px precision.
- The residual, zero-initialised projection: at step 0 the model is exactly CLIP (as the alpha
  conv's zero start makes Alpha-CLIP), so training starts from CLIP's retrieval quality and the
  frozen text tower's space instead of from a random head, and "the mask off" (`mask_off`) is a
  well-defined base for evaluation. The zero layer still gets gradients at step 0 (its input is
  not zero) and passes them on from step 1.
- The text side is unchanged: the frozen text tower and projection, captions cached as before.

Training is the same loop as alpha_conv: LoRA on the vision tower, the guide trained in full at
`optim.alpha_lr_multiplier` times the LoRA learning rate, without weight decay, the same
contrastive loss. Checkpoints and exports hold the guide in `object_guided.safetensors`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import CLIPModel

from fcdata.errors import UserError
from fcdata.transforms import ALPHA_MEAN, ALPHA_STD
from fctrain.model import RGBAClip, check_vision_inputs

GUIDE_WEIGHTS = "object_guided.safetensors"  # ObjectGuide's state_dict, beside adapters and in exports
OBJECT_WIDTHS = (32, 64)  # object path channels after each conv
MASK_WIDTHS = (16, 32)  # mask path channels after each conv


def _two_convs(channels_in: int, widths: tuple[int, int]) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels_in, widths[0], 3, stride=2, padding=1), nn.GELU(),
        nn.Conv2d(widths[0], widths[1], 3, stride=2, padding=1), nn.GELU(),
    )


class ObjectGuide(nn.Module):
    """The object path, the mask path, the fusion and the projection head (see the module doc)."""

    def __init__(self, width: int, projection_dim: int):
        super().__init__()
        self.object_path = _two_convs(3, OBJECT_WIDTHS)
        self.mask_path = _two_convs(1, MASK_WIDTHS)
        self.fuse = nn.Conv2d(width + OBJECT_WIDTHS[1] + MASK_WIDTHS[1], width, 1)
        self.norm = nn.LayerNorm(width)
        self.project = nn.Linear(width, projection_dim)
        nn.init.zeros_(self.project.weight)  # the model starts as CLIP (module doc)
        nn.init.zeros_(self.project.bias)

    def forward(self, pixel_values: torch.Tensor, mask: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """pixel_values B x 3 x S x S (CLIP-normalised), mask B x 1 x S x S in [0, 1], patches
        B x D x g x g (CLIP's) -> B x projection_dim, the correction to CLIP's embedding."""
        grid = patches.shape[-2:]
        objects = F.adaptive_avg_pool2d(self.object_path(pixel_values * mask), grid)  # B x 64 x g x g
        masks = F.adaptive_avg_pool2d(self.mask_path(mask), grid)  # B x 32 x g x g
        fused = F.gelu(self.fuse(torch.cat([patches, objects, masks], dim=1)))  # B x D x g x g
        return self.project(self.norm(fused.mean(dim=(2, 3))))


def object_guided_vision_forward(model: ObjectGuidedClip, pixel_values: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """CLIP's projected class token plus the guide's correction; projected, not normalised.
    A plain function for the same reason as fctrain.model.rgba_vision_forward (torch.compile)."""
    clip = model.base_clip
    vision = clip.vision_model
    size = vision.embeddings.image_size
    check_vision_inputs(size, pixel_values, alpha)
    dtype = vision.embeddings.patch_embedding.weight.dtype
    pixel_values = pixel_values.to(dtype)
    out = vision(pixel_values=pixel_values)
    tokens = vision.post_layernorm(out.last_hidden_state[:, 1:])  # B x g*g x D
    grid = size // vision.config.patch_size
    patches = tokens.transpose(1, 2).unflatten(2, (grid, grid))  # B x D x g x g
    mask = (alpha.to(dtype) * ALPHA_STD + ALPHA_MEAN).clamp(0, 1)  # undo fcdata.transforms.normalize_alphas
    return clip.visual_projection(out.pooler_output) + model.guide(pixel_values, mask, patches)


class ObjectGuidedClip(RGBAClip):
    """RGBAClip's family member whose mask module is `self.guide` (ObjectGuide) instead of an
    alpha patch conv; the CLIP vision tower sees the RGB image only."""

    architecture = "object_guided"
    mask_weights = GUIDE_WEIGHTS
    mask_title = "object-guided paths"
    vision_forward = staticmethod(object_guided_vision_forward)

    def __init__(self, clip: CLIPModel):
        nn.Module.__init__(self)  # not RGBAClip's: it would add an alpha conv this design has not
        self._attach(clip)
        weight = clip.vision_model.embeddings.patch_embedding.weight
        self.guide = ObjectGuide(clip.config.vision_config.hidden_size, clip.config.projection_dim).to(
            device=weight.device, dtype=weight.dtype
        )

    @property
    def mask_module(self) -> nn.Module:
        return self.guide

    def save_mask_module(self, path: Path) -> None:
        save_file({k: v.detach().cpu().contiguous() for k, v in self.guide.state_dict().items()}, str(path))

    def load_mask_module(self, path: Path) -> None:
        state = load_file(str(path))
        expected = {k: tuple(v.shape) for k, v in self.guide.state_dict().items()}
        found = {k: tuple(v.shape) for k, v in state.items()}
        if found != expected:
            wrong = sorted(set(found.items()) ^ set(expected.items()))[0][0]
            raise UserError(f"{path}: object-guided weights do not fit the model ({wrong!r} differs)")
        self.guide.load_state_dict(state)

    @contextlib.contextmanager
    def mask_off(self) -> Iterator[None]:
        """The model without its guide (the projection zero, as at step 0): CLIP with any LoRA."""
        project = self.guide.project
        saved = [p.detach().clone() for p in (project.weight, project.bias)]
        project.weight.data.zero_()
        project.bias.data.zero_()
        try:
            yield
        finally:
            project.weight.data.copy_(saved[0])
            project.bias.data.copy_(saved[1])
