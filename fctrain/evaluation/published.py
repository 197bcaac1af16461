"""Published numbers for the same protocols, to print beside measured ones (from
../shared/BENCHMARKS.md; percentages). A row is shown only where the backbone matches and the
setting is the harness's (ground-truth boxes for REC), so it can be compared with a measured row.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Published:
    benchmark: str  # refcoco, refcoco+, refcocog, imagenet-s
    split: str  # testA, testB, test, validation
    method: str  # the measured method it compares with (fctrain.evaluation.methods.METHODS)
    backbone: str  # e.g. ViT-B/16
    setting: str  # REC: "gt-boxes" (no score subtraction) or "detector"; ImageNet-S: "center-crop"
    value: float  # percent
    who: str  # the row's name in its source
    source: str  # where it was read


_FALIP_PAPER = "FALIP paper (Zhuang et al. 2024), via third-party summaries; unverified against the PDF"
_ALPHA_CLIP = "Alpha-CLIP paper (Sun et al. 2024), Table: zero-shot ImageNet-S"

PUBLISHED: tuple[Published, ...] = (
    Published("refcoco", "testA", "red_circle", "ViT-B/16", "gt-boxes", 41.6, "red circle", _FALIP_PAPER),
    Published("refcoco", "testB", "red_circle", "ViT-B/16", "gt-boxes", 36.2, "red circle", _FALIP_PAPER),
    Published("refcoco+", "testA", "red_circle", "ViT-B/16", "gt-boxes", 44.7, "red circle", _FALIP_PAPER),
    Published("refcocog", "test", "red_circle", "ViT-B/16", "gt-boxes", 45.4, "red circle", _FALIP_PAPER),
    Published("refcoco", "testA", "falip", "ViT-B/16", "gt-boxes", 44.2, "FALIP", _FALIP_PAPER),
    Published("refcoco", "testB", "falip", "ViT-B/16", "gt-boxes", 39.4, "FALIP", _FALIP_PAPER),
    Published("refcoco+", "testA", "falip", "ViT-B/16", "gt-boxes", 46.8, "FALIP", _FALIP_PAPER),
    Published("refcocog", "test", "falip", "ViT-B/16", "gt-boxes", 51.5, "FALIP", _FALIP_PAPER),
    Published("imagenet-s", "validation", "whole_image", "ViT-B/16", "center-crop", 66.48, "CLIP", _ALPHA_CLIP),
    Published("imagenet-s", "validation", "alpha_mask", "ViT-B/16", "center-crop", 68.31, "Alpha-CLIP (GRIT-1M)", _ALPHA_CLIP),
    Published("imagenet-s", "validation", "whole_image", "ViT-L/14", "center-crop", 73.48, "CLIP", _ALPHA_CLIP),
    Published("imagenet-s", "validation", "alpha_whole", "ViT-L/14", "center-crop", 73.37, "Alpha-CLIP, whole-image alpha", _ALPHA_CLIP),
    Published("imagenet-s", "validation", "alpha_box", "ViT-L/14", "center-crop", 75.62, "Alpha-CLIP, box alpha", _ALPHA_CLIP),
    Published("imagenet-s", "validation", "alpha_mask", "ViT-L/14", "center-crop", 77.41, "Alpha-CLIP, mask alpha", _ALPHA_CLIP),
)

# Same benchmarks, other settings: printed as a note, never beside a measured row.
NOT_COMPARABLE = {
    "refcoco": "ReCLIP (RN50x16 + ViT-B/32, gt boxes) val/testA/testB 50.5/47.1/54.9; Alpha-CLIP (B/16 + L/14, detector) 55.7/61.1/50.3",
    "refcoco+": "ReCLIP (RN50x16 + ViT-B/32, gt boxes) 52.1/51.7/52.0; Alpha-CLIP (B/16 + L/14, detector) 55.6/62.7/46.4",
    "refcocog": "ReCLIP (RN50x16 + ViT-B/32, gt boxes) val/test 67.9/67.1; Alpha-CLIP (B/16 + L/14, detector) 61.2/62.0",
    "imagenet-s": "FALIP's paper uses another ImageNet-S protocol (CLIP B/16 64.9, FALIP 67.3)",
}


def backbone_name(vision_config) -> str:
    """ViT-B/16, ViT-L/14, ... from a CLIP vision config; 'custom (...)' for anything else."""
    sizes = {(768, 12): "B", (1024, 24): "L", (1280, 32): "H"}
    letter = sizes.get((vision_config.hidden_size, vision_config.num_hidden_layers))
    if letter is None:
        return f"custom (width {vision_config.hidden_size}, {vision_config.num_hidden_layers} layers, patch {vision_config.patch_size})"
    return f"ViT-{letter}/{vision_config.patch_size}"


def comparable(benchmark: str, split: str, backbone: str, image_size: int, setting: str) -> dict[str, Published]:
    """method -> the published row it can be compared with (same benchmark, split, backbone and
    setting, 224 px input)."""
    if image_size != 224:
        return {}
    return {p.method: p for p in PUBLISHED
            if (p.benchmark, p.split, p.backbone, p.setting) == (benchmark, split, backbone, setting)}
