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
