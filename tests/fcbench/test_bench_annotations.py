"""The annotation benchmark measures fc shard's peak memory with and without relationships."""

import pytest


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_shard_memory_rows_with_and_without_relations(tmp_path):
    """At a tiny scale: a row per case, peak memory in GiB and decimal GB, relations counted only
    where relationships.json is read, and the scratch output removed afterwards."""
    from fcbench.annotations import run

    rows = {row["case"]: row for row in run(tmp_path, scale=0.002, workers=(2,), repeats=1)}
    with_relations, without = rows["fc_shard_workers_2"], rows["fc_shard_workers_2_no_relations"]
    assert with_relations["relations"] > 10 * 216 and without["relations"] == 0  # ~21 per image
    assert with_relations["regions"] == without["regions"] == rows["fc_annotations_workers_2"]["regions"]
    assert rows["fc_annotations_workers_2"]["relations"] == with_relations["relations"]
    for row in (with_relations, without):
        assert 0.05 < row["peak_mem_gib"] < 3 and row["peak_mem_gb"] > row["peak_mem_gib"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vg-scale-216-s0"]
