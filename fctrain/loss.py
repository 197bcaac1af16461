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

Hard negatives of relation views (fcdata.relation_views) join only their own view's rows, as
extra columns: a swapped-weight view of the same image is an extra candidate image in the
text->image row of the view's phrase, and each negative caption (the inverse-direction phrase,
another predicate of the image) an extra candidate text in the image->text row of the view. An
extra whose phrase key equals the row's own (the same caption) is masked, as duplicates are. The
extras are laid out per view in a fixed number of slots (`HardNegatives.images_per_view`,
`texts_per_view`; empty slots -inf), so each rank's B x slots block has the same shape: the
blocks are gathered like the features (the local one with its gradient), and every rank again
computes the global loss and the exact gradient of its own features and negatives.
"""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass
class HardNegatives:
    """Extra negatives of some views of the local batch (B views). Negative images (M of them, of
    the view in image_slot) compete in that view's text->image row; negative texts (N, in slot
    text_slot = view * texts_per_view + k) in its image->text row."""

    images: torch.Tensor  # M x D image features (any scale)
    image_slot: torch.Tensor  # M int64: view * images_per_view + k, k < images_per_view
    image_keys: torch.Tensor  # M int64: the phrase key of each one's own caption (0: none)
    texts: torch.Tensor  # N x D text features
    text_slot: torch.Tensor  # N int64: view * texts_per_view + k
    text_keys: torch.Tensor  # N int64
    images_per_view: int = 1
    texts_per_view: int = 2


def region_contrastive_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    phrase_keys: torch.Tensor,
    logit_scale: torch.Tensor,
    across_ranks: bool = True,
    label_smoothing: float = 0.0,
    hard: HardNegatives | None = None,
) -> torch.Tensor:
    """image_features, text_features: B x D (any scale); phrase_keys: B int64, equal for equal
    captions; logit_scale: a scalar (CLIP's exp(logit_scale), e.g. 100). Returns the mean of the
    image->text and text->image cross-entropies. across_ranks=False keeps the loss local to this
    process even under DDP: for work only one rank does, or batches whose sizes differ between
    ranks (a collective would hang or fail there). label_smoothing: as in F.cross_entropy (Alpha-CLIP
    uses 0.1), the smoothed mass spread over a row's candidates but not its masked duplicates.
    `hard`: extra negatives of some views (see the module docstring); under DDP every rank passes
    one or none."""
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
    image_rows, text_rows = logits, logits.T  # image->text, text->image
    if hard is not None:
        # Row i: its own candidates, then its extra slots (targets stay at column i).
        extra_texts = _extra_logits(images, hard.texts, hard.text_slot, hard.text_keys, phrase_keys, hard.texts_per_view, logit_scale)
        extra_images = _extra_logits(texts, hard.images, hard.image_slot, hard.image_keys, phrase_keys, hard.images_per_view, logit_scale)
        image_rows = torch.cat([image_rows, gather(extra_texts)], dim=1)
        text_rows = torch.cat([text_rows, gather(extra_images)], dim=1)
    if not label_smoothing:
        return 0.5 * (F.cross_entropy(image_rows, targets) + F.cross_entropy(text_rows, targets))
    # F.cross_entropy's smoothing puts mass on every column, the -inf ones too (an infinite loss):
    # masked duplicates and empty or masked hard-negative slots, exactly the -inf entries.
    return 0.5 * sum(_smoothed_cross_entropy(rows, rows > float("-inf"), label_smoothing) for rows in (image_rows, text_rows))


def _smoothed_cross_entropy(logits: torch.Tensor, allowed: torch.Tensor, smoothing: float) -> torch.Tensor:
    """F.cross_entropy(label_smoothing=smoothing) with the diagonal as targets, the smoothing mass
    spread over each row's allowed columns only (N x C logits, C >= N: extra columns after the
    N candidates; N x C bool `allowed`, the diagonal included); without masked columns it equals
    PyTorch's."""
    log_p = F.log_softmax(logits, dim=-1)
    uniform = torch.where(allowed, log_p, torch.zeros_like(log_p)).sum(dim=-1) / allowed.sum(dim=-1)
    return (-(1 - smoothing) * log_p.diagonal() - smoothing * uniform).mean()


def _extra_logits(
    anchors: torch.Tensor, negatives: torch.Tensor, slot: torch.Tensor, negative_keys: torch.Tensor,
    anchor_keys: torch.Tensor, per_view: int, logit_scale: torch.Tensor,
) -> torch.Tensor:
    """B x per_view logits of each view's own negatives (anchors: B x D normalised), -inf in empty
    slots and where a negative has its view's own caption. Built by a scatter: no device sync."""
    views = anchors.shape[0]
    negatives = F.normalize(negatives.float(), dim=-1)
    owner = torch.div(slot, per_view, rounding_mode="floor")
    values = logit_scale * (anchors[owner] * negatives).sum(-1)  # M
    values = values.masked_fill(negative_keys == anchor_keys[owner], float("-inf"))
    empty = torch.full((views * per_view,), float("-inf"), device=anchors.device, dtype=values.dtype)
    return empty.index_put((slot,), values).view(views, per_view)
