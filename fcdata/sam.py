"""SAM / SAM2 masks from box or point prompts, through Hugging Face transformers, from a local folder.

One image-encoder pass per batch of images, then every prompt of an image through the prompt
decoder at once; of SAM's three candidate masks per prompt the one with the best predicted IoU
is kept, post-processed (upscaled, padding removed, thresholded at logit 0) back to the image's
own size. bf16 autocast on CUDA. Nothing is downloaded: the folder must hold a saved SamModel
(or Sam2Model) and its processor.

    masker = SamMasker.load("models/sam-vit-base")
    [prediction] = masker.predict([image], boxes=[np.array([[40, 30, 200, 180]])])
    prediction.masks[0]            # H x W bool, the object in that box
    masker.predict([image], points=[np.array([[120, 100]])])  # a click
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from fcdata.errors import UserError

KINDS = ("sam", "sam2")  # config.json model_type values this reads


@dataclass
class Prediction:
    masks: np.ndarray  # K x H x W bool, at the image's size
    iou: np.ndarray  # K float32, SAM's predicted IoU of each kept mask


def model_kind(path: Path) -> str:
    """"sam" or "sam2" from the folder's config.json; a one-line UserError for anything else."""
    config_path = Path(path) / "config.json"
    if not config_path.is_file():
        raise UserError(f"--sam-model {path}: no config.json there; it must be a folder saved by SamModel.save_pretrained")
    try:
        kind = json.loads(config_path.read_text()).get("model_type")
    except (OSError, json.JSONDecodeError, AttributeError) as exc:
        raise UserError(f"--sam-model {path}: cannot read config.json ({exc})") from None
    if kind not in KINDS:
        raise UserError(f"--sam-model {path}: a {kind!r} model, not SAM or SAM2 (model_type sam / sam2)")
    return kind


def resolve_device(device: str):
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
    try:
        return torch.device(device)
    except RuntimeError:
        raise UserError(f"--device {device!r}: not a device name (auto, cpu, cuda, cuda:1)") from None


class SamMasker:
    def __init__(self, model, processor, kind: str, device):
        self.model, self.processor, self.kind, self.device = model, processor, kind, device

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> "SamMasker":
        """A SAM or SAM2 saved with save_pretrained (model and processor) in `path`."""
        path = Path(path)
        kind = model_kind(path)
        torch_device = resolve_device(device)
        import transformers

        if kind == "sam2" and not hasattr(transformers, "Sam2Model"):
            raise UserError(f"--sam-model {path}: a SAM2 model, and transformers {transformers.__version__} has no Sam2Model")
        model_class = transformers.SamModel if kind == "sam" else transformers.Sam2Model
        processor_class = transformers.SamProcessor if kind == "sam" else transformers.Sam2Processor
        try:
            model = model_class.from_pretrained(path)
            processor = processor_class.from_pretrained(path)
        except ImportError as exc:  # Sam2's image processor needs torchvision
            raise UserError(f"--sam-model {path}: {processor_class.__name__} needs a missing library ({str(exc).strip().splitlines()[0]})") from None
        except (OSError, ValueError) as exc:
            raise UserError(f"--sam-model {path}: cannot load {model_class.__name__} and its processor ({exc})") from None
        model.requires_grad_(False).eval().to(torch_device)
        return cls(model, processor, kind, torch_device)

    def predict(
        self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray] | None = None,
        points: Sequence[np.ndarray] | None = None,
    ) -> list[Prediction]:
        """Per image (H x W x 3 uint8) its prompts: boxes K x 4 (x0, y0, x1, y1) or points K x 2
        (x, y), in the image's pixels -> a Prediction per image. An image without prompts gets
        empty arrays."""
        import torch

        if (boxes is None) == (points is None):
            raise ValueError("give either boxes or points")
        prompts = [np.asarray(p, np.float64).reshape(-1, 4 if points is None else 2) for p in (boxes if points is None else points)]
        if len(prompts) != len(images):
            raise ValueError(f"{len(images)} images but prompts for {len(prompts)}")
        encoded = [self._encode_prompts(image, prompt, points is not None) for image, prompt in zip(images, prompts)]
        pixel_values = torch.cat([e["pixel_values"] for e in encoded]).to(self.device)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else _null()
        out = []
        with torch.inference_mode(), autocast:
            embeddings = self.model.get_image_embeddings(pixel_values)  # one encoder pass for the batch
            for index, (image, prompt, inputs) in enumerate(zip(images, prompts, encoded)):
                height, width = image.shape[:2]
                if len(prompt) == 0:
                    out.append(Prediction(np.zeros((0, height, width), bool), np.zeros(0, np.float32)))
                    continue
                prompt_key = "input_points" if points is not None else "input_boxes"
                result = self.model(
                    image_embeddings=_select(embeddings, index),
                    multimask_output=True,
                    **{prompt_key: inputs[prompt_key].to(self.device)},
                )
                scores = result.iou_scores[0].float()  # K x 3
                best = scores.argmax(dim=-1)
                logits = result.pred_masks[0][torch.arange(len(best)), best][None, :, None].float()  # 1 x K x 1 x h x w
                masks = self._post_process(logits[:, :, 0][:, :, None], inputs)[0][:, 0]  # K x H x W
                out.append(Prediction(masks.cpu().numpy().astype(bool), scores.gather(1, best[:, None])[:, 0].cpu().numpy()))
        return out

    def _encode_prompts(self, image: np.ndarray, prompt: np.ndarray, as_points: bool) -> dict:
        """The processor's resize and normalisation of one image, and its prompt coordinates."""
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"images must be H x W x 3 uint8 arrays, got {image.dtype} {image.shape}")
        if len(prompt) == 0:
            return self.processor(images=image, return_tensors="pt")
        if as_points:  # one point per prompt: K prompts x 1 point x (x, y)
            return self.processor(images=image, input_points=[[[p] for p in prompt.tolist()]], return_tensors="pt")
        return self.processor(images=image, input_boxes=[prompt.tolist()], return_tensors="pt")

    def _post_process(self, logits, inputs):
        extra = {"reshaped_input_sizes": inputs["reshaped_input_sizes"]} if self.kind == "sam" else {}
        return self.processor.post_process_masks(logits.cpu(), inputs["original_sizes"], binarize=True, **extra)


def _select(embeddings, index: int):
    """Image `index`'s embeddings: SAM returns one tensor, SAM2 a list of feature levels."""
    if isinstance(embeddings, (list, tuple)):
        return [level[index : index + 1] for level in embeddings]
    return embeddings[index : index + 1]


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def tiny_sam(path: str | Path, seed: int = 0, image_size: int = 128) -> Path:
    """Save a randomly initialised, tiny SAM (~0.1 M parameters) and its processor to `path`:
    meaningless masks, real mechanics (tests, `fc bench masks`, the demo; nothing downloaded)."""
    import torch
    from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor

    patch = 16
    vision = dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=image_size, patch_size=patch,
        output_channels=32, mlp_dim=64, window_size=4, global_attn_indexes=[1], num_pos_feats=16,
    )
    config = SamConfig(
        vision_config=vision,
        prompt_encoder_config=dict(hidden_size=32, image_size=image_size, patch_size=patch, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_dim=64, iou_head_hidden_dim=32),
    )
    torch.manual_seed(seed)
    model = SamModel(config)
    processor = SamProcessor(
        image_processor=SamImageProcessor(size={"longest_edge": image_size}, pad_size={"height": image_size, "width": image_size})
    )
    path = Path(path)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
