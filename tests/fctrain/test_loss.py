import math

import pytest
import torch
import torch.nn.functional as F

from floats import assert_different, assert_same
from fctrain.loss import HardNegatives, region_contrastive_loss


def reference_loss(images, texts, keys, scale):
    """Symmetric InfoNCE written out row by row; equal captions are dropped as negatives."""
    images, texts = F.normalize(images, dim=-1), F.normalize(texts, dim=-1)
    total = 0.0
    n = len(images)
    for i in range(n):
        allowed = [j for j in range(n) if j == i or keys[j] != keys[i]]
        row = torch.stack([scale * images[i] @ texts[j] for j in allowed])
        total += -torch.log_softmax(row, 0)[allowed.index(i)]
        column = torch.stack([scale * texts[i] @ images[j] for j in allowed])
        total += -torch.log_softmax(column, 0)[allowed.index(i)]
    return total / (2 * n)


def reference_with_hard_negatives(images, texts, keys, scale, negative_images, image_owner, image_keys, negative_texts, text_owner, text_keys):
    """The same, written out: a view's negative images join its phrase's row, its negative texts
    its image's row, unless they carry its own caption."""
    images, texts = F.normalize(images, dim=-1), F.normalize(texts, dim=-1)
    negative_images, negative_texts = F.normalize(negative_images, dim=-1), F.normalize(negative_texts, dim=-1)
    total = 0.0
    n = len(images)
    for i in range(n):
        allowed = [j for j in range(n) if j == i or keys[j] != keys[i]]
        extra = [negative_texts[m] for m in range(len(text_owner)) if text_owner[m] == i and text_keys[m] != keys[i]]
        row = torch.stack([scale * images[i] @ texts[j] for j in allowed] + [scale * images[i] @ t for t in extra])
        total += -torch.log_softmax(row, 0)[allowed.index(i)]
        extra = [negative_images[m] for m in range(len(image_owner)) if image_owner[m] == i and image_keys[m] != keys[i]]
        column = torch.stack([scale * texts[i] @ images[j] for j in allowed] + [scale * texts[i] @ v for v in extra])
        total += -torch.log_softmax(column, 0)[allowed.index(i)]
    return total / (2 * n)


def hard_case(seed: int = 5):
    """Six views; views 1 and 4 are relation views with a swapped image each and two and one
    negative texts; view 4's second text has its own caption (key 5, masked)."""
    torch.manual_seed(seed)
    tensors = {
        "images": torch.randn(6, 8), "texts": torch.randn(6, 8),
        "negative_images": torch.randn(2, 8), "negative_texts": torch.randn(4, 8),
    }
    for value in tensors.values():
        value.requires_grad_(True)
    layout = {
        "keys": torch.tensor([1, 2, 1, 3, 5, 6]), "image_owner": [1, 4], "image_keys": [0, 0],
        "text_owner": [1, 1, 4, 4], "text_keys": [11, 12, 13, 5],
    }
    return tensors, layout


def hard_loss(tensors, layout, scale=20.0):
    hard = HardNegatives(
        tensors["negative_images"], torch.tensor(layout["image_owner"]), torch.tensor(layout["image_keys"]),
        tensors["negative_texts"], torch.tensor([2 * v + k for v, k in zip(layout["text_owner"], [0, 1, 0, 1])]),
        torch.tensor(layout["text_keys"]), images_per_view=1, texts_per_view=2,
    )
    return region_contrastive_loss(tensors["images"], tensors["texts"], layout["keys"], torch.tensor(scale), hard=hard)


def test_hard_negatives_match_a_written_out_reference_in_value_and_gradient():
    """Swapped views and negative captions enter only their own view's rows, same-caption ones are
    masked; the loss and every input's gradient equal the row-by-row definition's."""
    tensors, layout = hard_case()
    got = hard_loss(tensors, layout)
    got.backward()
    gradients = {name: value.grad.clone() for name, value in tensors.items()}
    for value in tensors.values():
        value.grad = None
    expected = reference_with_hard_negatives(
        tensors["images"], tensors["texts"], layout["keys"].tolist(), 20.0, tensors["negative_images"],
        layout["image_owner"], layout["image_keys"], tensors["negative_texts"], layout["text_owner"], layout["text_keys"],
    )
    expected.backward()
    assert_same(got, expected)
    for name, value in tensors.items():
        assert value.grad.abs().sum() > 0, name
        assert_same(gradients[name], value.grad, what=f"gradient of {name}")
    plain = region_contrastive_loss(tensors["images"], tensors["texts"], layout["keys"], torch.tensor(20.0))
    assert got > plain  # the extras are real competitors, not masked away


def test_loss_rises_as_a_hard_negative_moves_towards_the_positive():
    """A swapped view closer to its phrase's text, or a negative caption closer to its view's image, raises the loss."""
    tensors, layout = hard_case()
    with torch.no_grad():
        before = hard_loss(tensors, layout).item()
        towards = {}
        for name, target, index, anchor in (("negative_images", "texts", 0, 1), ("negative_texts", "images", 1, 1)):
            moved = {k: v.detach().clone() for k, v in tensors.items()}
            # halfway to the anchor: more similar to the positive it competes with
            moved[name][index] = 0.5 * F.normalize(moved[name][index], dim=0) + 0.5 * F.normalize(moved[target][anchor], dim=0)
            towards[name] = hard_loss(moved, layout).item()
    assert towards["negative_images"] > before and towards["negative_texts"] > before


def test_a_hard_negative_with_the_views_own_caption_counts_for_nothing():
    """Masked extras (the view's own phrase key) leave the loss as if they were absent."""
    tensors, layout = hard_case()
    with torch.no_grad():
        masked = hard_loss(tensors, layout)
        without = {k: v for k, v in tensors.items()}
        without["negative_texts"] = tensors["negative_texts"][:3]
        fewer = dict(layout, text_owner=[1, 1, 4], text_keys=[11, 12, 13])
        hard = HardNegatives(
            tensors["negative_images"], torch.tensor([1, 4]), torch.tensor([0, 0]),
            without["negative_texts"], torch.tensor([2, 3, 8]), torch.tensor(fewer["text_keys"]),
        )
        absent = region_contrastive_loss(tensors["images"], tensors["texts"], layout["keys"], torch.tensor(20.0), hard=hard)
    assert_same(masked, absent)


def test_label_smoothing_spares_empty_and_masked_hard_negative_slots():
    """With label smoothing, hard negatives still count and a masked one (the view's own caption)
    gets no smoothed mass: the loss is finite and equals the loss without that negative."""
    tensors, layout = hard_case()
    with torch.no_grad():
        smooth = lambda hard: region_contrastive_loss(  # noqa: E731
            tensors["images"], tensors["texts"], layout["keys"], torch.tensor(20.0), label_smoothing=0.1, hard=hard
        )
        every = HardNegatives(
            tensors["negative_images"], torch.tensor([1, 4]), torch.tensor([0, 0]),
            tensors["negative_texts"], torch.tensor([2, 3, 8, 9]), torch.tensor(layout["text_keys"]),
        )
        unmasked = HardNegatives(
            tensors["negative_images"], torch.tensor([1, 4]), torch.tensor([0, 0]),
            tensors["negative_texts"][:3], torch.tensor([2, 3, 8]), torch.tensor(layout["text_keys"][:3]),
        )
        with_masked, without = smooth(every), smooth(unmasked)
    assert torch.isfinite(with_masked)
    assert_same(with_masked, without)
    assert_different(with_masked, hard_loss(tensors, layout).detach())


def test_loss_matches_a_written_out_reference():
    """The vectorised loss equals the row-by-row definition, duplicate captions included."""
    torch.manual_seed(0)
    images, texts = torch.randn(6, 8), torch.randn(6, 8)
    keys = torch.tensor([1, 2, 1, 3, 4, 2])
    got = region_contrastive_loss(images, texts, keys, torch.tensor(20.0))
    assert_same(got, reference_loss(images, texts, keys.tolist(), 20.0))


def test_equal_captions_are_not_negatives():
    """Two regions with the same caption: matching either caption is not penalised."""
    texts = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    images = texts.clone()
    with_duplicates = region_contrastive_loss(images, texts, torch.tensor([7, 7, 8]), torch.tensor(100.0))
    as_distinct = region_contrastive_loss(images, texts, torch.tensor([7, 9, 8]), torch.tensor(100.0))
    assert with_duplicates < 1e-3 < as_distinct  # distinct keys make the twin a perfect confuser: log 2


def test_perfect_alignment_approaches_zero_and_random_is_near_log_batch():
    """Sanity: aligned features give ~0 loss, unrelated features ~log(B) at a small scale."""
    torch.manual_seed(1)
    features = torch.randn(32, 64)
    keys = torch.arange(32)
    assert region_contrastive_loss(features, features, keys, torch.tensor(100.0)) < 1e-3
    unrelated = region_contrastive_loss(torch.randn(32, 64), torch.randn(32, 64), keys, torch.tensor(1.0))
    assert abs(unrelated - math.log(32)) < 0.1


def test_gradients_reach_the_image_features_only_through_the_loss():
    """The image side gets gradients; masked duplicate entries contribute none (no NaN from -inf)."""
    images = torch.randn(4, 8, requires_grad=True)
    loss = region_contrastive_loss(images, torch.randn(4, 8), torch.tensor([1, 1, 2, 2]), torch.tensor(10.0))
    loss.backward()
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0


def _hard_for(tower, rows: slice, negatives) -> HardNegatives | None:
    """The hard negatives of the views in `rows` (local slots), through the same tower."""
    if negatives is None:
        return None
    inputs, owner, texts, text_owner = negatives
    mine = [m for m, v in enumerate(owner.tolist()) if rows.start <= v < rows.stop]
    text_mine = [m for m, v in enumerate(text_owner.tolist()) if rows.start <= v < rows.stop]
    return HardNegatives(
        tower(inputs[mine]), owner[mine] - rows.start, torch.zeros(len(mine), dtype=torch.int64),
        texts[text_mine], 2 * (text_owner[text_mine] - rows.start), torch.full((len(text_mine),), 99),
    )


def _rank_gradient(rank: int, world: int, port: int, inputs, keys, negatives, out_dir: str) -> None:
    """One gloo rank: a linear image tower on its half of the batch, the loss scaled by the world
    size as the trainer does, then DDP's gradient averaging by hand."""
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    tower = torch.nn.Linear(inputs.shape[1], 8)
    texts = torch.nn.functional.normalize(torch.randn(len(inputs), 8), dim=-1)
    rows = slice(rank * len(inputs) // world, (rank + 1) * len(inputs) // world)
    hard = _hard_for(tower, rows, negatives)
    loss = region_contrastive_loss(tower(inputs[rows]), texts[rows], keys[rows], torch.tensor(10.0), hard=hard)
    (loss * world).backward()
    for parameter in tower.parameters():
        dist.all_reduce(parameter.grad)
        parameter.grad /= world
    torch.save({"loss": loss.detach(), "grad": tower.weight.grad}, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.parametrize("with_hard_negatives", [False, True])
def test_two_ranks_give_the_gradient_of_one_process_on_the_whole_batch(tmp_path, with_hard_negatives):
    """Gathered features with local gradients, the loss times the world size and DDP's averaging
    reproduce the single-process loss and gradient of the global batch (negatives on the other
    rank included; hard negatives too, a different number on each rank)."""
    import socket

    import torch.multiprocessing as mp

    torch.manual_seed(3)
    inputs, keys = torch.randn(8, 5), torch.tensor([1, 2, 3, 1, 4, 5, 6, 7])
    negatives = None
    if with_hard_negatives:  # rank 0: views 1 and 2 have swapped views; rank 1: view 6, and texts
        negatives = (torch.randn(3, 5), torch.tensor([1, 2, 6]), torch.randn(2, 8), torch.tensor([2, 5]))
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    mp.start_processes(_rank_gradient, args=(2, port, inputs, keys, negatives, str(tmp_path)), nprocs=2, start_method="forkserver")
    torch.manual_seed(0)
    tower = torch.nn.Linear(5, 8)
    texts = torch.nn.functional.normalize(torch.randn(8, 8), dim=-1)
    whole = region_contrastive_loss(tower(inputs), texts, keys, torch.tensor(10.0), hard=_hard_for(tower, slice(0, 8), negatives))
    whole.backward()
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        # Two ranks sum the same terms in another order than one process: equal to float32 rounding.
        assert_same(result["loss"], whole.detach(), what=f"rank {rank} loss")
        assert_same(result["grad"], tower.weight.grad, what=f"rank {rank} gradient")


def test_label_smoothing_equals_pytorchs_without_duplicates_and_skips_masked_columns():
    """Without equal captions the smoothed loss is F.cross_entropy's; with them, the masked twins
    get no smoothing mass (the loss stays finite and below what smoothing onto them would give)."""
    torch.manual_seed(2)
    images, texts = torch.randn(6, 8), torch.randn(6, 8)
    scale = torch.tensor(10.0)
    logits = scale * F.normalize(images, dim=-1) @ F.normalize(texts, dim=-1).T
    targets = torch.arange(6)
    expected = 0.5 * (F.cross_entropy(logits, targets, label_smoothing=0.1) + F.cross_entropy(logits.T, targets, label_smoothing=0.1))
    assert_same(region_contrastive_loss(images, texts, torch.arange(6), scale, label_smoothing=0.1), expected)

    twins = torch.tensor([1, 1, 2, 3, 4, 5])
    smoothed = region_contrastive_loss(images, texts, twins, scale, label_smoothing=0.1)
    plain = region_contrastive_loss(images, texts, twins, scale)
    assert torch.isfinite(smoothed)
    assert_different(smoothed, plain)
    allowed = twins[:, None] != twins[None, :]
    allowed.fill_diagonal_(True)
    log_p = torch.log_softmax(logits.masked_fill(~allowed, float("-inf")), dim=-1)
    by_hand = (-(0.9) * log_p.diagonal() - 0.1 * torch.stack([log_p[i][allowed[i]].mean() for i in range(6)])).mean()
    log_q = torch.log_softmax(logits.T.masked_fill(~allowed, float("-inf")), dim=-1)
    by_hand_t = (-(0.9) * log_q.diagonal() - 0.1 * torch.stack([log_q[i][allowed[i]].mean() for i in range(6)])).mean()
    assert_same(smoothed, 0.5 * (by_hand + by_hand_t))
