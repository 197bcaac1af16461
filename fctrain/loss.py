"""Region-aware contrastive loss: symmetric InfoNCE between region embeddings (image + alpha) and
caption embeddings.

A batch holds several regions of each image, so same-image regions are each other's hardest
negatives: the image pixels are identical and only the alpha differs. Captions equal ignoring case
(VG repeats about 8% of phrases within an image, and common ones across images) are removed as
negatives of each other rather than pushed apart.

Under DDP every rank gathers the features of all ranks and computes the loss of the global batch
(all rows against all columns); only its own slice carries gradients, the others are detached
copies. The gradient a rank gets for its own features is then exactly the global loss's: those
features appear both as rows and as other rows' negatives, and both uses are in its graph. DDP
averages parameter gradients over ranks, so the caller scales the loss by the world size before
backward to get the gradient of one process training the whole global batch. The logits are
(world x B)^2, which is small beside the model (8 ranks x 256: 2048^2).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def gather_rows(local: torch.Tensor) -> torch.Tensor:
    """The rows of every rank concatenated in rank order. The local slice keeps its gradient; the
    others are detached copies. Every rank must pass the same number of rows."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local
    world, rank = dist.get_world_size(), dist.get_rank()
    parts = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(parts, local.detach().contiguous())
    parts[rank] = local
    return torch.cat(parts)


def region_contrastive_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    phrase_keys: torch.Tensor,
    logit_scale: torch.Tensor,
    across_ranks: bool = True,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """image_features, text_features: B x D (any scale); phrase_keys: B int64, equal for equal
    captions; logit_scale: a scalar (CLIP's exp(logit_scale), e.g. 100). Returns the mean of the
    image->text and text->image cross-entropies. across_ranks=False keeps the loss local to this
    process even under DDP: for work only one rank does, or batches whose sizes differ between
    ranks (a collective would hang or fail there). label_smoothing: as in F.cross_entropy (Alpha-CLIP
    uses 0.1), the smoothed mass spread over a row's candidates but not its masked duplicates."""
    images = F.normalize(image_features.float(), dim=-1)
    texts = F.normalize(text_features.float(), dim=-1)
    gather = gather_rows if across_ranks else (lambda local: local)
    all_images, all_texts, all_keys = gather(images), gather(texts), gather(phrase_keys)
    count = all_images.shape[0]
    targets = torch.arange(count, device=images.device)
    # Equal captions are not negatives: mask every same-key pair except a row's own target.
    duplicate = all_keys[:, None] == all_keys[None, :]
    duplicate.fill_diagonal_(False)
    logits = (logit_scale * all_images @ all_texts.T).masked_fill(duplicate, float("-inf"))
    if not label_smoothing:
        return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))
    # F.cross_entropy's smoothing puts mass on every column, the -inf duplicates too (an infinite loss).
    return 0.5 * (_smoothed_cross_entropy(logits, ~duplicate, label_smoothing) + _smoothed_cross_entropy(logits.T, ~duplicate.T, label_smoothing))


def _smoothed_cross_entropy(logits: torch.Tensor, allowed: torch.Tensor, smoothing: float) -> torch.Tensor:
    """F.cross_entropy(label_smoothing=smoothing) with the diagonal as targets, the smoothing mass
    spread over each row's allowed columns only (N x N logits, N x N bool `allowed`, the diagonal
    included); without masked columns it equals PyTorch's."""
    log_p = F.log_softmax(logits, dim=-1)
    uniform = torch.where(allowed, log_p, torch.zeros_like(log_p)).sum(dim=-1) / allowed.sum(dim=-1)
    return (-(1 - smoothing) * log_p.diagonal() - smoothing * uniform).mean()
