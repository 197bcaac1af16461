"""Scoring shared by the benchmarks: text features, tie-aware hits and ranks, box IoU.

Ties matter: a method that gives every candidate of an image the same features (whole-image CLIP
among one image's boxes) must score chance, not 0 or 1, so a hit among tied top candidates counts
as the chance that a random pick among them is right.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from fctrain.model import RGBAClip


def text_features(model: RGBAClip, tokenizer, texts: list[str], batch_size: int, device) -> torch.Tensor:
    """N x D unit text features (CPU float32) of the cleaned captions, cut at the tokenizer's length."""
    from fcdata.captions import tokenize_captions

    rows = []
    for start in range(0, len(texts), batch_size):
        tokens = tokenize_captions(tokenizer, texts[start : start + batch_size])
        rows.append(model.encode_text(tokens["input_ids"].to(device), tokens["attention_mask"].to(device)).float())
    return F.normalize(torch.cat(rows), dim=-1).cpu()


def tie_aware_hit(scores: np.ndarray, correct: np.ndarray, eps: float = 1e-6) -> float:
    """Chance that a random pick among the top-scoring candidates is correct."""
    top = scores >= scores.max() - eps
    return float(correct[top].mean())


def tie_aware_rank(scores: np.ndarray, target: int, eps: float = 1e-6) -> tuple[float, float, float]:
    """(mean rank, P(rank <= 1), P(rank <= 5)) of `target` when ties are broken at random."""
    above = int((scores > scores[target] + eps).sum())
    tied = int((np.abs(scores - scores[target]) <= eps).sum()) - 1
    def within(k: int) -> float:
        return float(np.clip((k - above) / (tied + 1), 0.0, 1.0))
    return above + 1 + tied / 2, within(1), within(5)


def box_iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one (x0, y0, x1, y1) box with each row of `others` (continuous coordinates)."""
    width = np.clip(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), 0, None)
    height = np.clip(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), 0, None)
    inter = width * height
    area = (box[2] - box[0]) * (box[3] - box[1])
    return inter / (area + (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1]) - inter)
