"""The loader benchmark's baseline reads broken shards the way every reader does: skips, no stop."""

import pytest

from fcbench.loader import NaiveViews


@pytest.mark.timeout(120)
def test_naive_baseline_skips_broken_shards_and_samples(shard_faults):
    """A 0-byte shard, a truncated one and random-bytes images are skipped; the good samples'
    views all come out."""
    paths = [shard_faults.zero_bytes(), shard_faults.truncated(), shard_faults.random_members(every=2), shard_faults.good]
    views = list(NaiveViews(paths, size=32, views_per_image=2))
    good_only = list(NaiveViews([shard_faults.good], size=32, views_per_image=2))
    assert len(views) > len(good_only) > 0
    assert all(pixels.shape == (3, 32, 32) for pixels, _, _ in views)


@pytest.mark.timeout(300)
def test_bench_rows_ceilings_stages_loader_and_every_peer(make_shards, tmp_path):
    """One small in-process run: the ceilings, the per-stage costs and levers, the loader's
    per-core rate, and a row per peer with its rate or the reason it could not run."""
    from fcbench.loader import PEERS, run

    shards = make_shards(images=24, seed=3, shard_samples=12, val_fraction=0.0)
    rows = {r["case"]: r for r in run(shards, tmp_path, size=64, batch_size=8, workers=(0,), repeats=1, save=False, views=32)}
    assert rows["decode_ceiling"]["images_per_cpu_s"] > 0 and rows["decode_ceiling_simplejpeg"]["images_per_cpu_s"] > 0
    assert all(value > 0 for key, value in rows["stages"].items() if key.endswith("_ms"))
    assert all(before > 0 and after > 0 for key, (before, after) in
               ((k, v) for k, v in rows["levers"].items() if k.endswith("_ms")))
    loader = rows["loader_workers_0"]
    assert loader["images_per_cpu_s_per_core"] > 0 and loader["per_core_vs_decode_ceiling"] > 0
    for peer in PEERS:
        row = next(r for case, r in rows.items() if case.startswith(f"{peer}_"))
        assert row.get("images_per_cpu_s_per_core", 0) > 0 or isinstance(row.get("skipped"), str), row
