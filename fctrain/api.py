"""Inference with an exported Focus-CLIP model: embed image regions and captions, score them.

    import numpy as np
    from fctrain.api import FocusClip

    model = FocusClip.load("runs/vg/export")               # a directory written by export_model
    image = np.asarray(PIL.Image.open("street.jpg").convert("RGB"))   # H x W x 3 uint8
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[120:300, 40:200] = 255                             # the region to look at (graded allowed)
    scores = model.score(image, mask, ["a red car", "a man on a bicycle"])   # 1 x 2

A region can also be given as a click or a box and turned into a mask by SAM (`fcdata.sam`, a
local SamModel / Sam2Model folder), the Object-Guided way of pointing:

    masker = SamMasker.load("models/sam-vit-base")
    alpha = sam_alpha(masker, image, point=(150, 210))   # H x W uint8, SAM's mask of the click
    scores = model.score(image, alpha, ["a red car", "a man on a bicycle"])

A relation ("man riding horse") is seen through a graded alpha: the subject at 1, the object at a
lower weight, the rest 0. `relation_alpha` builds one from two boxes or masks:

    alpha = relation_alpha((40, 120, 200, 300), (30, 200, 260, 420), weights=(1.0, 0.5), shape=image.shape[:2])
    scores = model.score(image, alpha, ["a man riding a horse", "a horse riding a man"])

Images and masks are always preprocessed together, one geometry for both. `preprocess`:

    "letterbox"    zero-pad to square, resize (bilinear): as in evaluation and Alpha-CLIP's
                   training; a region is never cut away. The default (the export's metadata).
    "center_crop"  OpenAI CLIP's: shorter side to the model's size (bicubic), centre square. Whole-
                   image embeddings of non-square images then match open_clip's / OpenAI's; a
                   region near the long sides may be cut away (a warning says so).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fcdata.captions import tokenize_captions
from fcdata.errors import UserError
from fcdata.relations import relation_alpha  # noqa: F401 - part of the API (see the module docstring)
from fcdata.transforms import center_crop, letterbox, normalize_alphas, normalize_images
from fctrain.export import FORMAT, FORMAT_VERSION, METADATA
from fctrain.model import RGBAClip, load_clip, wrap_clip

ImageLike = np.ndarray  # H x W x 3 uint8
AlphaLike = np.ndarray | None  # H x W: uint8 0..255, float 0..1 or bool; None = the whole image
# preprocess name -> (image, K masks, size) -> (size x size x 3, K x size x size), one geometry for both
PREPROCESS = {"letterbox": letterbox, "center_crop": center_crop}


class FocusClip:
    """A loaded Focus-CLIP model. Embeddings are L2-normalised float32 on the model's device."""

    def __init__(self, model: RGBAClip, tokenizer, device: torch.device, dtype: torch.dtype, batch_size: int = 64,
                 preprocess: str = "letterbox"):
        if preprocess not in PREPROCESS:
            raise ValueError(f"preprocess must be one of {sorted(PREPROCESS)}, got {preprocess!r}")
        self.preprocess = preprocess  # how images and masks become model-size squares (module docstring)
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size  # images per forward in encode_image
        self.image_size = model.image_size

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
             preprocess: str | None = None) -> FocusClip:
        """Load an export (see fctrain.export). `dtype` e.g. torch.bfloat16 on a GPU; default float32.
        `preprocess` "letterbox" or "center_crop" (module docstring); default the export's own.

        >>> model = FocusClip.load("runs/vg/export", device="cuda", dtype=torch.bfloat16)
        """
        path = Path(path)
        meta_path = path / METADATA
        if not meta_path.is_file():
            raise UserError(f"{path}: not a Focus-CLIP export (no {METADATA}); write one with fctrain.export.export_model")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
            raise UserError(
                f"{path}: export format {meta.get('format')!r} v{meta.get('format_version')}, "
                f"this version reads {FORMAT!r} v{FORMAT_VERSION}"
            )
        clip, tokenizer = load_clip(path)
        model = wrap_clip(clip, meta.get("architecture", "alpha_conv"))
        model.load_mask_module(path / meta.get("mask_weights", meta.get("alpha_weights", model.mask_weights)))
        if model.image_size != meta["image_size"]:
            raise UserError(f"{path}: {METADATA} says {meta['image_size']} px, the model takes {model.image_size}")
        device = torch.device(device)
        dtype = dtype or torch.float32
        model.requires_grad_(False).eval().to(device=device, dtype=dtype)
        preprocess = preprocess or meta.get("preprocess", "letterbox")
        if preprocess not in PREPROCESS:
            raise UserError(f"preprocess must be one of {sorted(PREPROCESS)}, got {preprocess!r}")
        return cls(model, tokenizer, device, dtype, preprocess=preprocess)

    def encode_image(self, images: ImageLike | Sequence[ImageLike], alphas: AlphaLike | Sequence[AlphaLike] = None) -> torch.Tensor:
        """Image(s) and their region mask(s) -> N x D unit vectors.

        `images`: one H x W x 3 uint8 array or a sequence of them (sizes may differ). `alphas`: one
        mask per image (H x W, uint8 0..255 or float 0..1; graded values are kept at 8-bit
        precision), None for the whole image, or a sequence of those.

        >>> emb = model.encode_image([img_a, img_b], [mask_a, None])   # 2 x D
        """
        single = isinstance(images, np.ndarray) and images.ndim == 3
        images = [images] if single else list(images)
        if alphas is None:
            alphas = [None] * len(images)
        elif single and not isinstance(alphas, (list, tuple)):
            alphas = [alphas]
        else:
            alphas = list(alphas)
        if len(alphas) != len(images):
            raise ValueError(f"{len(images)} images but {len(alphas)} alphas: give one mask (or None) per image")
        out, lost = [], 0
        for start in range(0, len(images), self.batch_size):
            pairs = [self._square(i, a) for i, a in zip(images[start : start + self.batch_size], alphas[start : start + self.batch_size])]
            pixels = torch.stack([p for p, _, _ in pairs]).to(self.device)  # n x 3 x S x S uint8
            masks = torch.stack([a for _, a, _ in pairs]).to(self.device)  # n x 1 x S x S uint8
            lost += sum(gone for _, _, gone in pairs)
            with torch.inference_mode():
                features = self.model.encode_image(
                    normalize_images(pixels).to(self.dtype), normalize_alphas(masks).to(self.dtype)
                )
            out.append(F.normalize(features.float(), dim=-1))
        if lost:
            warnings.warn(f"center_crop cut {lost} of {len(images)} regions away entirely (outside the centre square): "
                          f"their embeddings see no region; use preprocess='letterbox' for regions near the edges",
                          stacklevel=2)
        return torch.cat(out)

    def encode_text(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Caption(s) -> N x D unit vectors (cut at 77 tokens).

        >>> emb = model.encode_text(["a red car", "a dog"])   # 2 x D
        """
        texts = [texts] if isinstance(texts, str) else list(texts)
        batch = tokenize_captions(self.tokenizer, texts)
        with torch.inference_mode():
            features = self.model.encode_text(batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device))
        return F.normalize(features.float(), dim=-1)

    def score(self, images, alphas, texts) -> torch.Tensor:
        """N_images x N_texts: cosine similarity times the model's logit scale exp(logit_scale)
        (100 for OpenAI CLIP). Softmax over a row ranks captions for a region.

        >>> model.score(img, mask, ["a red car", "a dog"]).softmax(-1)
        """
        scale = self.model.logit_scale.detach().float().exp()
        return scale * self.encode_image(images, alphas) @ self.encode_text(texts).T

    def _square(self, image: np.ndarray, alpha) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """One image and mask -> 3 x S x S and 1 x S x S uint8 tensors, one geometry for both, and
        whether the preprocessing cut a non-empty mask away entirely."""
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"images must be H x W x 3 uint8 arrays, got {image.dtype} {image.shape}")
        mask = np.full(image.shape[:2], 255, np.uint8) if alpha is None else _alpha_uint8(np.asarray(alpha))
        if mask.shape != image.shape[:2]:
            raise ValueError(f"alpha {mask.shape} must match its image's height x width {image.shape[:2]}")
        square, masks = PREPROCESS[self.preprocess](image, mask[None], self.image_size)
        # Copies: PIL-backed arrays are read-only, which torch.from_numpy warns about.
        return torch.tensor(square).permute(2, 0, 1), torch.tensor(masks), bool(mask.any() and not masks.any())


def sam_alpha(masker, image: np.ndarray, point: Sequence[float] | None = None, box: Sequence[float] | None = None) -> np.ndarray:
    """SAM's mask for one click (x, y) or box (x0, y0, x1, y1) in `image`'s pixels, as the H x W
    uint8 alpha encode_image takes: the best of SAM's candidates by predicted IoU."""
    if (point is None) == (box is None):
        raise ValueError("give a point or a box")
    if point is not None:
        [prediction] = masker.predict([image], points=[np.asarray([point], np.float64)])
    else:
        [prediction] = masker.predict([image], boxes=[np.asarray([box], np.float64)])
    return prediction.masks[0].astype(np.uint8) * np.uint8(255)


def _alpha_uint8(alpha: np.ndarray) -> np.ndarray:
    if alpha.dtype == np.uint8:
        return alpha
    if alpha.dtype == np.bool_:
        return alpha.astype(np.uint8) * 255
    if np.issubdtype(alpha.dtype, np.floating):
        if alpha.size and (np.nanmin(alpha) < 0 or np.nanmax(alpha) > 1 or np.isnan(alpha).any()):
            raise ValueError("float alphas must lie in [0, 1]")
        return np.rint(alpha * 255).astype(np.uint8)
    raise ValueError(f"alphas must be uint8 (0..255), float (0..1) or bool, got {alpha.dtype}")
