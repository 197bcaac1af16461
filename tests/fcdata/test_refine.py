"""fc masks: SAM masks into shards, everything else byte-identical, resumable, with box fallback."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fcdata import keys, reader, refine, segmasks, tarformat
from fcdata.errors import UserError
from fcdata.options import MaskOptions, ShardOptions, SynthOptions
from fcdata.sam import SamMasker, tiny_sam
from fcdata.shard import shard_vg
from fcdata.synth import generate_vg
from fcdata.synth_coco import INSTANCES_FILE

PERMISSIVE = MaskOptions(batch_images=3, min_predicted_iou=0.0, max_outside_box=1.0, device="cpu")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("refine")
    generate_vg(base / "vg", SynthOptions(num_images=10, regions_per_image=6, long_side_px=(160, 240)))
    options = ShardOptions(shard_samples=4, workers=1, val_fraction=0.2, coco_instances=(str(base / "vg" / INSTANCES_FILE),))
    shard_vg(base / "vg", base / "shards", options)
    return base, tiny_sam(base / "sam")


def members(path: Path) -> list[tuple[str, bytes]]:
    out = []
    for sample in tarformat.iter_shard(path):
        out += [(f"{sample[keys.KEY]}.{name}", data) for name, data in sample.items() if name != keys.KEY]
    return out


def test_output_keeps_everything_but_the_masks(setup, tmp_path):
    """Same samples, members and order; JPEG, profiles and every JSON field but "mask" identical;
    COCO masks kept; prompted regions carry exactly the wrapper's prediction."""
    base, sam_dir = setup
    summary = refine.refine_shards(base / "shards", tmp_path / "out", sam_dir, PERMISSIVE)
    masker = SamMasker.load(sam_dir, "cpu")
    checked = 0
    for shard in sorted((base / "shards").glob("*.tar")):
        before, after = members(shard), members(tmp_path / "out" / shard.name)
        names_before = [n for n, _ in before if not n.endswith((keys.MASK_RUNS, keys.MASK_CROPS))]
        assert [n for n, _ in after if not n.endswith((keys.MASK_RUNS, keys.MASK_CROPS))] == names_before
        old, new = dict(before), dict(after)
        for name in names_before:
            if name.endswith(".json"):
                a, b = json.loads(old[name]), json.loads(new[name])
                assert {k: v for k, v in a.items() if k != "mask"} == {k: v for k, v in b.items() if k != "mask"}
            else:
                assert old[name] == new[name], name
        for raw_in, raw_out in zip(tarformat.iter_shard(shard), tarformat.iter_shard(tmp_path / "out" / shard.name)):
            sample_in, sample_out = reader.decode_sample(raw_in), reader.decode_sample(raw_out)
            prompted = [k for k, s in enumerate(sample_in.mask_sources) if s == "box"]
            boxes = np.asarray([sample_in.meta["regions"]["box"][k] for k in prompted]).reshape(-1, 4)
            [prediction] = masker.predict([sample_in.image], boxes=[boxes])
            for m, k in enumerate(prompted):
                if prediction.masks[m].any():
                    assert sample_out.mask_sources[k] == "sam"
                    np.testing.assert_array_equal(sample_out.masks[k] > 0, prediction.masks[m])
            for k, source in enumerate(sample_in.mask_sources):
                if source == "coco":
                    assert sample_out.mask_sources[k] == "coco"
                    np.testing.assert_array_equal(sample_out.masks[k], sample_in.masks[k])
            checked += 1
    assert checked == summary["images"] == 10
    assert summary["regions"]["regions_sam"] > 0 and summary["regions"]["regions_coco_kept"] > 0
    assert json.loads((tmp_path / "out" / "sizes.json").read_text()) == json.loads((base / "shards" / "sizes.json").read_text())


def test_default_thresholds_keep_boxes_for_unsure_masks(setup, tmp_path):
    """A random tiny SAM predicts IoUs near 0: every prompted region keeps its box, counted."""
    base, sam_dir = setup
    summary = refine.refine_shards(base / "shards", tmp_path / "out", sam_dir, MaskOptions(device="cpu"))
    regions = summary["regions"]
    assert regions["regions_sam"] == 0 and regions["box_low_predicted_iou"] + regions["box_empty_mask"] > 0


def test_resume_finishes_identically_and_a_finished_job_does_nothing(setup, tmp_path):
    """Kill-like states (a shard never written, a temp file) resume to the same bytes."""
    base, sam_dir = setup
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    refine.refine_shards(base / "shards", whole, sam_dir, PERMISSIVE)
    refine.refine_shards(base / "shards", resumed, sam_dir, PERMISSIVE)
    first = sorted(resumed.glob("*.tar"))[0]
    first.unlink()
    (resumed / refine.PARTS_DIR / f"{first.stem}.json").unlink()
    (resumed / f"{first.name}.tmp123").write_bytes(b"half")
    refine.refine_shards(base / "shards", resumed, sam_dir, PERMISSIVE)
    for shard in sorted(whole.glob("*.tar")):
        assert (resumed / shard.name).read_bytes() == shard.read_bytes()
    assert not list(resumed.glob("*.tmp*"))
    stamps = {p.name: p.stat().st_mtime_ns for p in resumed.glob("*.tar")}
    refine.refine_shards(base / "shards", resumed, sam_dir, PERMISSIVE)
    assert {p.name: p.stat().st_mtime_ns for p in resumed.glob("*.tar")} == stamps


def test_other_options_on_the_same_output_are_refused(setup, tmp_path):
    base, sam_dir = setup
    refine.refine_shards(base / "shards", tmp_path / "out", sam_dir, PERMISSIVE)
    with pytest.raises(UserError, match="other options"):
        refine.refine_shards(base / "shards", tmp_path / "out", sam_dir, MaskOptions(device="cpu"))


def test_bad_model_folders_and_devices_are_one_line_errors(setup, tmp_path):
    """Not a folder with config.json, not a SAM, CUDA asked for where there is none."""
    base, sam_dir = setup
    with pytest.raises(UserError, match="no config.json"):
        SamMasker.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "clip"}))
    with pytest.raises(UserError, match="not SAM"):
        SamMasker.load(tmp_path)
    with pytest.raises(UserError, match="not SAM"):
        refine.refine_shards(base / "shards", tmp_path / "out", tmp_path, MaskOptions(device="cpu"))
    assert not (tmp_path / "out").exists()  # nothing written for a job that cannot start
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            SamMasker.load(sam_dir, "cuda")


def test_accept_rules():
    """Empty, unsure and spilling masks fall back to the box; a mask inside its box is kept."""
    options = MaskOptions()
    mask = np.zeros((50, 50), bool)
    assert refine.accept(mask, 0.99, [10, 10, 30, 30], options) == refine.EMPTY
    mask[12:28, 12:28] = True
    assert refine.accept(mask, 0.5, [10, 10, 30, 30], options) == refine.LOW_IOU
    assert refine.accept(mask, 0.9, [10, 10, 30, 30], options) == refine.KEPT
    mask[30:50, :] = True
    assert refine.accept(mask, 0.9, [10, 10, 30, 30], options) == refine.OUTSIDE


def test_point_prompts_give_one_mask_per_click(setup):
    """The API path: a mask from a click, at the image's size."""
    _, sam_dir = setup
    image = np.random.default_rng(0).integers(0, 255, (70, 90, 3), dtype=np.uint8)
    [prediction] = SamMasker.load(sam_dir, "cpu").predict([image], points=[np.array([[10, 20], [60, 40]])])
    assert prediction.masks.shape == (2, 70, 90) and prediction.masks.dtype == bool and prediction.iou.shape == (2,)


@pytest.mark.slow
def test_ray_runner_writes_what_one_process_writes(setup, tmp_path):
    """A local Ray instance (CPU actors, tiny SAM) gives byte-identical shards and the same summary."""
    ray = pytest.importorskip("ray")
    from fcdata.refine_ray import refine_shards_ray

    base, sam_dir = setup
    single = refine.refine_shards(base / "shards", tmp_path / "single", sam_dir, PERMISSIVE)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        spread = refine_shards_ray(base / "shards", tmp_path / "ray", sam_dir, PERMISSIVE, "local", cpu_actors=2)
    finally:
        ray.shutdown()
    for shard in sorted((tmp_path / "single").glob("*.tar")):
        assert (tmp_path / "ray" / shard.name).read_bytes() == shard.read_bytes()
    assert {k: v for k, v in spread.items() if k != "last_run_seconds"} == {k: v for k, v in single.items() if k != "last_run_seconds"}
