import math

import torch
import torch.nn.functional as F

from floats import assert_different, assert_same
from fctrain.loss import region_contrastive_loss


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


def _rank_gradient(rank: int, world: int, port: int, inputs, keys, out_dir: str) -> None:
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
    loss = region_contrastive_loss(tower(inputs[rows]), texts[rows], keys[rows], torch.tensor(10.0))
    (loss * world).backward()
    for parameter in tower.parameters():
        dist.all_reduce(parameter.grad)
        parameter.grad /= world
    torch.save({"loss": loss.detach(), "grad": tower.weight.grad}, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


def test_two_ranks_give_the_gradient_of_one_process_on_the_whole_batch(tmp_path):
    """Gathered features with local gradients, the loss times the world size and DDP's averaging
    reproduce the single-process loss and gradient of the global batch (negatives on the other
    rank included)."""
    import socket

    import torch.multiprocessing as mp

    torch.manual_seed(3)
    inputs, keys = torch.randn(8, 5), torch.tensor([1, 2, 3, 1, 4, 5, 6, 7])
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    mp.start_processes(_rank_gradient, args=(2, port, inputs, keys, str(tmp_path)), nprocs=2, start_method="forkserver")
    torch.manual_seed(0)
    tower = torch.nn.Linear(5, 8)
    texts = torch.nn.functional.normalize(torch.randn(8, 8), dim=-1)
    whole = region_contrastive_loss(tower(inputs), texts, keys, torch.tensor(10.0))
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
