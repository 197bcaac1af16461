"""SAM / SAM2 masks from box or point prompts, through Hugging Face transformers, from a local folder.

One image-encoder pass per batch of images, then every prompt of an image through the prompt
decoder at once; of SAM's three candidate masks per prompt the one with the best predicted IoU
is kept, post-processed (upscaled, padding removed, thresholded at logit 0) back to the image's
own size. bf16 autocast on CUDA. Nothing is downloaded: the folder must hold a saved SamModel
and its processor, or a saved Sam2Model (its preprocessor_config.json, when there, gives the
input size, mean and std).

SAM2 runs without transformers' Sam2Processor: its image-processor module imports torchvision at
the top (torchvision.ops.batched_nms, for automatic mask generation, which this does not use) and
resizes through a torchvision backend, while Sam2Model itself needs only torch. Sam2Preprocess
does the same steps in torch: a bilinear antialiased resize of the uint8 image to the model's
square input (no aspect kept, no padding), /255, ImageNet mean and std; prompt coordinates scaled
per axis; the low-resolution logits resized bilinearly back to the image's size.

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
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # Sam2ImageProcessor's defaults
_RESAMPLE = {2: "bilinear", 3: "bicubic"}  # PIL codes in preprocessor_config.json -> torch's (uint8-capable, antialiased)


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


@dataclass(frozen=True)
class Sam2Preprocess:
    """Sam2ImageProcessor's steps in torch (see the module docstring), from the folder's
    preprocessor_config.json where it has one."""

    height: int = 1024
    width: int = 1024
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    rescale: float = 1 / 255
    mode: str = "bilinear"  # the resize; PIL's resample codes 2 (bilinear) and 3 (bicubic) map here

    @classmethod
    def of(cls, path: Path) -> "Sam2Preprocess":
        config_path = Path(path) / "preprocessor_config.json"
        if not config_path.is_file():
            return cls()
        try:
            config = json.loads(config_path.read_text())
            size = config.get("size") or {"height": 1024, "width": 1024}
            resample = config.get("resample", 2)
            preprocess = cls(int(size["height"]), int(size["width"]), tuple(config.get("image_mean", IMAGENET_MEAN)),
                             tuple(config.get("image_std", IMAGENET_STD)), float(config.get("rescale_factor", 1 / 255)),
                             _RESAMPLE.get(resample, ""))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UserError(f"--sam-model {path}: cannot read preprocessor_config.json ({exc})") from None
        if not preprocess.mode:
            raise UserError(f"--sam-model {path}: preprocessor_config.json asks for resample {resample!r}; this reads 2 (bilinear) or 3 (bicubic)")
        return preprocess

    def __call__(self, image: np.ndarray, prompt: np.ndarray, as_points: bool) -> dict:
        """What predict needs of one image: pixel_values 1 x 3 x h x w, original_sizes, and the
        prompt in input coordinates (boxes 1 x K x 4; points 1 x K x 1 x 2 with foreground labels)."""
        import torch
        import torch.nn.functional as F

        height, width = image.shape[:2]
        # uint8 in, uint8 out (rounded), as the torchvision backend resizes a uint8 tensor on the CPU; a
        # copy, as the caller's array may be read-only (decoded from a shard)
        resized = F.interpolate(torch.from_numpy(np.array(image)).permute(2, 0, 1)[None], (self.height, self.width),
                                mode=self.mode, antialias=True, align_corners=False)
        mean, std = torch.tensor(self.mean)[:, None, None], torch.tensor(self.std)[:, None, None]
        out = {"pixel_values": (resized.float() * self.rescale - mean) / std, "original_sizes": torch.tensor([[height, width]])}
        if not len(prompt):
            return out
        scale = np.array([self.width / width, self.height / height] * (1 if as_points else 2))
        coords = torch.from_numpy(prompt * scale).float()
        if as_points:
            out["input_points"] = coords[None, :, None]
            out["input_labels"] = torch.ones(1, len(prompt), 1, dtype=torch.long)
        else:
            out["input_boxes"] = coords[None]
        return out

    def post_process_masks(self, logits, original_sizes, binarize: bool = True):
        """1 x K x 1 x h x w logits -> [K x 1 x H x W] masks at the image's size (logit > 0)."""
        import torch.nn.functional as F

        height, width = (int(v) for v in original_sizes[0])
        resized = F.interpolate(logits[0], (height, width), mode="bilinear", align_corners=False)
        return [resized > 0 if binarize else resized]


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
        try:
            model = model_class.from_pretrained(path)
            processor = transformers.SamProcessor.from_pretrained(path) if kind == "sam" else Sam2Preprocess.of(path)
        except ImportError as exc:
            raise UserError(f"--sam-model {path}: {model_class.__name__} needs a missing library ({str(exc).strip().splitlines()[0]})") from None
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
                prompt_keys = ("input_points", "input_labels") if points is not None else ("input_boxes",)
                result = self.model(
                    image_embeddings=_select(embeddings, index),
                    multimask_output=True,
                    **{key: inputs[key].to(self.device) for key in prompt_keys if key in inputs},
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
        if self.kind == "sam2":
            return self.processor(image, prompt, as_points)
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


def tiny_sam2(path: str | Path, seed: int = 0, image_size: int = 128) -> Path:
    """Save a randomly initialised, tiny SAM2 (~0.35 M parameters: a 5-block Hiera, 32-wide FPN and
    decoder) and its preprocessor_config.json to `path`; like tiny_sam, real mechanics only."""
    import torch
    from transformers import Sam2Config, Sam2Model

    backbone = dict(
        model_type="sam2_hiera_det_model", hidden_size=16, num_attention_heads=1, image_size=[image_size, image_size],
        blocks_per_stage=[1, 1, 2, 1], embed_dim_per_stage=[16, 32, 64, 128], num_attention_heads_per_stage=[1, 1, 1, 1],
        # a global block must not open a stage (Hiera pools the query there, halving a window of 0)
        window_size_per_stage=[4, 4, 4, 4], global_attention_blocks=[3], window_positional_embedding_background_size=[2, 2],
    )
    levels = [[image_size // stride] * 2 for stride in (4, 8, 16)]  # the FPN levels the decoder reads
    config = Sam2Config(
        vision_config=dict(backbone_config=backbone, backbone_channel_list=[128, 64, 32, 16], backbone_feature_sizes=levels, fpn_hidden_size=32),
        prompt_encoder_config=dict(hidden_size=32, image_size=image_size, patch_size=16, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32),
    )
    torch.manual_seed(seed)
    path = Path(path)
    Sam2Model(config).save_pretrained(path)
    # What Sam2ImageProcessor.save_pretrained writes, for the fields Sam2Preprocess reads.
    (path / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "Sam2ImageProcessor", "processor_class": "Sam2Processor",
        "size": {"height": image_size, "width": image_size}, "mask_size": {"height": image_size // 4, "width": image_size // 4},
        "do_resize": True, "resample": 2, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": list(IMAGENET_MEAN), "image_std": list(IMAGENET_STD),
    }, indent=2))
    return path
