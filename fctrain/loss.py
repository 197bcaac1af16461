"""Region-aware contrastive loss: symmetric InfoNCE between region embeddings (image + alpha) and
caption embeddings.

A batch holds several regions of each image, so same-image regions are each other's hardest
negatives: the image pixels are identical and only the alpha differs. Captions equal ignoring case
(VG repeats about 8% of phrases within an image, and common ones across images) are removed as
negatives of each other rather than pushed apart. Under DDP the features of all ranks are
gathered; only the local part carries gradients (open_clip's local-loss scheme), so each rank's
loss covers its own rows against every rank's columns.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def gather_rows(local: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(rows of every rank concatenated, offset of this rank's rows). The local slice keeps its
    gradient; the others are detached copies. Every rank must pass the same number of rows."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local, 0
    world, rank = dist.get_world_size(), dist.get_rank()
    parts = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(parts, local.detach().contiguous())
    parts[rank] = local
    return torch.cat(parts), rank * local.shape[0]


def region_contrastive_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    phrase_keys: torch.Tensor,
    logit_scale: torch.Tensor,
    across_ranks: bool = True,
) -> torch.Tensor:
    """image_features, text_features: B x D (any scale); phrase_keys: B int64, equal for equal
    captions; logit_scale: a scalar (CLIP's exp(logit_scale), e.g. 100). Returns the mean of the
    image->text and text->image cross-entropies. across_ranks=False keeps the loss local to this
    process even under DDP, for work that only one rank does (a collective there would hang)."""
    images = F.normalize(image_features.float(), dim=-1)
    texts = F.normalize(text_features.float(), dim=-1)
    gather = gather_rows if across_ranks else (lambda local: (local, 0))
    all_images, offset = gather(images)
    all_texts, _ = gather(texts)
    all_keys, _ = gather(phrase_keys)
    count = images.shape[0]
    targets = torch.arange(offset, offset + count, device=images.device)
    # Equal captions are not negatives: mask every same-key column except the row's own target.
    duplicate = phrase_keys[:, None] == all_keys[None, :]
    duplicate[torch.arange(count, device=images.device), targets] = False
    logits_per_image = (logit_scale * images @ all_texts.T).masked_fill(duplicate, float("-inf"))
    logits_per_text = (logit_scale * texts @ all_images.T).masked_fill(duplicate, float("-inf"))
    return 0.5 * (F.cross_entropy(logits_per_image, targets) + F.cross_entropy(logits_per_text, targets))
