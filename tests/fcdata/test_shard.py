import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from fcdata import masks, reasons
from fcdata.errors import UserError
from fcdata.options import ShardOptions
from fcdata.reader import read_shard
from fcdata.tarformat import iter_shard
from fcdata.shard import KILL_AFTER_ENV, PARTS_DIR, shard_vg
from fcdata.tarformat import ustar_header
from fcdata.options import SynthOptions
from fcdata.synth import generate_vg
from readme import block_containing, run_block

SMALL = (220, 320)  # long side of test images, px: small keeps the tests fast


@pytest.fixture(scope="module")
def quirky(tmp_path_factory):
    """A VG root with every planted quirk, and its report."""
    root = tmp_path_factory.mktemp("quirky")
    report = generate_vg(root, SynthOptions(num_images=30, quirks=True, seed=3, long_side_px=SMALL))
    return root, report


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """A clean VG root (v1.2 field names) and its shards, written with shards of 4 images."""
    root = tmp_path_factory.mktemp("clean")
    generate_vg(root, SynthOptions(num_images=24, seed=5, version="1.2", long_side_px=SMALL))
    out = tmp_path_factory.mktemp("clean-out")
    summary = shard_vg(root, out, ShardOptions(shard_samples=4, workers=1, strict=True))
    return root, out, summary


def file_digests(out: Path) -> dict[str, str]:
    """sha256 of every shard and of sizes.json: what must not depend on how the job ran."""
    names = sorted(p.name for p in out.glob("*.tar")) + ["sizes.json"]
    return {name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in names}


def test_every_planted_quirk_is_counted_under_its_reason(quirky, tmp_path):
    """Each VG quirk the generator planted shows up as exactly that many skips, drops or fixes."""
    root, report = quirky
    summary = shard_vg(root, tmp_path / "out", ShardOptions(shard_samples=8, workers=1, strict=True)).data
    counted = {}
    counted.update(summary["images"]["skipped"])
    counted.update(summary["images"]["fixed"])
    counted.update(summary["regions"]["dropped"])
    counted.update({k: v for k, v in summary["regions"]["fixed"].items() if v})
    assert counted == report.quirks
    assert summary["images"]["written"] == report.expected_images_kept
    assert summary["regions"]["kept"] == report.expected_regions_kept
    regions = summary["regions"]
    assert regions["listed"] == regions["kept"] + sum(regions["dropped"].values()) + regions["in_skipped_images"]


def test_manifest_lists_every_image_with_its_fate(quirky, tmp_path):
    """manifest.parquet has one row per listed image: written ones with sizes, skipped ones with the reason."""
    root, report = quirky
    out = tmp_path / "out"
    shard_vg(root, out, ShardOptions(shard_samples=8, workers=1))
    manifest = pq.read_table(out / "manifest.parquet").to_pylist()
    listed = json.loads((root / "image_data.json").read_text())
    assert len(manifest) == len(listed) == len({row["image_id"] for row in manifest})
    for row in manifest:
        if row["status"] == "ok":
            assert row["jpg_bytes"] > 0 and row["mask_bytes"] > 0 and row["regions_kept"] > 0
        else:
            assert row["status"] in reasons.IMAGE_SKIPS
    sizes = json.loads((out / "sizes.json").read_text())
    assert sum(sizes.values()) == sum(row["status"] == "ok" for row in manifest)


def test_region_ids_beyond_32_bits_survive(quirky, tmp_path):
    """Region ids like 900100184613 reach the sample JSON unchanged."""
    root, report = quirky
    out = tmp_path / "out"
    shard_vg(root, out, ShardOptions(shard_samples=64, workers=1))
    ids = {rid for tar in out.glob("*.tar") for sample in read_shard(tar) for rid in sample.region_ids}
    assert report.big_region_ids and set(report.big_region_ids) <= ids


def test_samples_round_trip_through_the_reader(clean):
    """Every sample decodes to an RGB image at the stored size and masks that are exactly its boxes."""
    _, out, summary = clean
    count = 0
    for tar in sorted(out.glob("*.tar")):
        for sample in read_shard(tar):
            height, width = sample.image.shape[:2]
            assert sample.image.dtype == np.uint8 and sample.image.shape[2] == 3
            assert (width, height) == (sample.meta["width"], sample.meta["height"])
            expected = np.zeros_like(sample.masks)
            for k, (x0, y0, x1, y1) in enumerate(sample.boxes):
                assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
                expected[k, y0:y1, x0:x1] = 255
            np.testing.assert_array_equal(sample.masks, expected)
            assert len(sample.phrases) == len(sample.masks) > 0
            count += 1
    assert count == summary.data["images"]["written"] == 24


@pytest.mark.parametrize("mask", ["binary", "soft"])
def test_readme_recipe_reads_what_the_reader_reads(clean, tmp_path, mask):
    """The README's block "with PIL and NumPy alone", run as written on a shard of binary (1-bit) or
    soft (8-bit) masks, gives the reader's image, masks and phrases for the shard's first sample."""
    root, out, _ = clean
    if mask == "soft":
        out = tmp_path / "soft"
        shard_vg(root, out, ShardOptions(shard_samples=4, mask="soft", workers=1, strict=True))
    recipe = run_block(block_containing('# K x (H + W), bool or uint8'), out)  # the separable-v1 recipe
    expected = min(read_shard(out / "train-00000.tar"), key=lambda sample: sample.key)
    np.testing.assert_array_equal(recipe["image"], expected.image)
    assert recipe["masks"].dtype == np.uint8
    np.testing.assert_array_equal(recipe["masks"], expected.masks)
    assert recipe["phrases"] == expected.phrases and recipe["meta"] == expected.meta
    assert bool(((expected.masks > 0) & (expected.masks < 255)).any()) == (mask == "soft")


def test_tar_headers_match_the_standard_library(clean):
    """Our hand-built tar headers are byte for byte what tarfile writes, and the archives list cleanly."""
    import tarfile as tf

    info = tf.TarInfo("000000123.profiles.png")
    info.size, info.mtime, info.mode = 12345, 0, 0o644
    assert ustar_header(info.name, info.size) == info.tobuf(format=tf.USTAR_FORMAT)
    _, out, _ = clean
    with tf.open(sorted(out.glob("*.tar"))[0]) as tar:
        assert all(member.isfile() and member.mtime == 0 for member in tar)


def test_output_does_not_depend_on_the_number_of_workers(clean, tmp_path):
    """Two workers write byte-identical shards and the same manifest as one."""
    root, out, _ = clean
    parallel = tmp_path / "out"
    shard_vg(root, parallel, ShardOptions(shard_samples=4, workers=2, strict=True))
    assert file_digests(parallel) == file_digests(out)
    assert pq.read_table(parallel / "manifest.parquet").equals(pq.read_table(out / "manifest.parquet"))


def test_finished_job_is_left_alone(clean):
    """Re-running a finished job reports it complete and rewrites nothing."""
    root, out, _ = clean
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    summary = shard_vg(root, out, ShardOptions(shard_samples=4, workers=1))
    assert summary.already_complete
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_resume_after_a_crash_finishes_the_job_identically(clean, tmp_path):
    """The states a crash can leave (missing shards, a half-written temp shard, a shard renamed
    before its manifest part) resume to exactly the uninterrupted result."""
    root, out, _ = clean
    crashed = tmp_path / "out"
    shutil.copytree(out, crashed)
    for name in ("summary.json", "manifest.parquet", "sizes.json"):
        (crashed / name).unlink()
    shards = sorted(crashed.glob("*.tar"))
    shards[0].unlink()  # never written
    (crashed / PARTS_DIR / f"{shards[0].stem}.parquet").unlink()
    (crashed / PARTS_DIR / f"{shards[1].stem}.parquet").unlink()  # tar renamed, part not yet
    (crashed / f"{shards[2].name}.tmp999").write_bytes(shards[2].read_bytes()[:700])  # half written
    (crashed / PARTS_DIR / f"{shards[2].stem}.parquet").unlink()
    shards[2].unlink()
    summary = shard_vg(root, crashed, ShardOptions(shard_samples=4, workers=1))
    assert not summary.already_complete
    assert not list(crashed.glob("*.tmp*"))
    assert file_digests(crashed) == file_digests(out)


@pytest.mark.slow
def test_kill_9_mid_run_then_rerun_gives_the_uninterrupted_result(clean, tmp_path):
    """A real `kill -9` of `fc shard` after two shards (the job's test hook sends it, so it lands there
    on any machine), then the same command again: the same shards as a clean run."""
    root, out, _ = clean
    killed = tmp_path / "out"
    command = [sys.executable, "-m", "fc", "shard", "--vg-root", str(root), "--out", str(killed),
               "--shard-samples", "4", "--workers", "1"]
    crash = subprocess.run(command, env={**os.environ, KILL_AFTER_ENV: "2"}, capture_output=True, timeout=120)
    assert crash.returncode == -signal.SIGKILL, crash.stderr.decode()[-2000:]
    assert len(list((killed / PARTS_DIR).glob("*.parquet"))) == 2
    assert len(list(killed.glob("*.tar"))) == 2 < len(list(out.glob("*.tar")))
    assert not (killed / "summary.json").exists()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
    assert file_digests(killed) == file_digests(out)


def test_other_options_on_the_same_output_are_refused(clean):
    """Resuming with different output-changing options is a clear error, not a mixed dataset."""
    root, out, _ = clean
    (out / "summary.json").rename(out / "summary.saved")
    try:
        with pytest.raises(UserError, match="image_size: 256 -> 300"):
            shard_vg(root, out, ShardOptions(shard_samples=4, image_size=300))
    finally:
        (out / "summary.saved").rename(out / "summary.json")


def test_soft_masks_are_graded_and_lossless(clean, tmp_path):
    """--mask soft stores feathered masks (values strictly between 0 and 255 at edges) exactly as rasterised."""
    root, _, _ = clean
    out = tmp_path / "soft"
    shard_vg(root, out, ShardOptions(shard_samples=64, mask="soft", feather_px=6.0, workers=1, strict=True))
    graded = False
    for sample in read_shard(sorted(out.glob("train-*.tar"))[0]):
        height, width = sample.image.shape[:2]
        expected = masks.rasterize_boxes(sample.boxes.astype(np.float32), height, width, 6.0)
        np.testing.assert_array_equal(sample.masks, expected)
        graded |= bool(((sample.masks > 0) & (sample.masks < 255)).any())
    assert graded


def test_mask_bytes_stay_small_on_vg_like_images(tmp_path):
    """At the defaults, masks of ~50 regions per image add well under 15% to the shards."""
    root = tmp_path / "vg"
    generate_vg(root, SynthOptions(num_images=6, regions_per_image=50, seed=1))
    summary = shard_vg(root, tmp_path / "out", ShardOptions(workers=1)).data
    assert summary["regions"]["kept"] >= 6 * 30
    assert summary["bytes"]["mask_fraction"] < 0.15


def test_bad_roots_are_one_line_errors(tmp_path):
    """A missing --vg-root, or one without region_descriptions.json, is a UserError naming what is wrong."""
    with pytest.raises(UserError, match="not a directory"):
        shard_vg(tmp_path / "nope", tmp_path / "out", ShardOptions())
    (tmp_path / "image_data.json").write_text("[]")
    with pytest.raises(UserError, match="region_descriptions.json not found"):
        shard_vg(tmp_path, tmp_path / "out", ShardOptions())


@pytest.mark.parametrize("field, value", [("image_size", 8), ("mask", "fuzzy"), ("val_fraction", 1.0), ("shard_samples", 0)])
def test_bad_options_are_refused(field, value):
    """Option values that cannot work are refused up front with a message naming the option."""
    with pytest.raises(UserError, match=field):
        ShardOptions(**{field: value})


def test_iter_shard_groups_members_by_key(clean):
    """The plain reader yields one dict per sample with every extension of that key."""
    _, out, _ = clean
    samples = list(iter_shard(sorted(out.glob("*.tar"))[0]))
    assert samples and all(set(s) == {"__key__", "jpg", "profiles.png", "json"} for s in samples)


def test_webdataset_reads_the_shards(clean):
    """The webdataset library itself reads our shards: every sample with its key and members."""
    import webdataset as wds

    _, out, summary = clean
    samples = list(wds.WebDataset(sorted(str(p) for p in out.glob("*.tar")), shardshuffle=False))
    assert len(samples) == summary.data["images"]["written"]
    assert all({"jpg", "profiles.png", "json"} <= set(s) for s in samples)


def test_manifest_is_byte_identical_between_runs(quirky, tmp_path):
    """Two runs over the same input (undecodable, truncated and missing images among it) write
    byte-identical manifests: no memory address or other accident of the run in any detail."""
    root, _ = quirky
    first, second = tmp_path / "a", tmp_path / "b"
    shard_vg(root, first, ShardOptions(workers=1))
    shard_vg(root, second, ShardOptions(workers=2))
    manifest = pq.read_table(first / "manifest.parquet").to_pydict()
    undecodable = [d for s, d in zip(manifest["status"], manifest["detail"]) if s == reasons.SKIP_UNDECODABLE]
    assert undecodable and not any(" at 0x" in detail for detail in undecodable)
    assert (first / "manifest.parquet").read_bytes() == (second / "manifest.parquet").read_bytes()


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def _running(pid: int) -> bool:
    """Alive and not a zombie (a container's init may never reap orphans)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture(scope="module")
def long_job_root(tmp_path_factory):
    """A VG root whose sharding lasts seconds (600 small images), so a signal sent a second after
    the workers start lands in the middle of the job, not in its last moments."""
    root = tmp_path_factory.mktemp("long-job")
    generate_vg(root, SynthOptions(num_images=600, seed=6, long_side_px=SMALL, workers=2))
    return root


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds worker processes through /proc")
@pytest.mark.parametrize("how", ["kill -9 of the parent", "Ctrl-C to the process group"])
def test_workers_end_with_the_command(long_job_root, tmp_path, how):
    """kill -9 of `fc shard`: its workers notice and exit within seconds. Ctrl-C to the whole
    process group: exit code 130, one short message, no traceback from any process."""
    root = long_job_root
    command = [sys.executable, "-m", "fc", "shard", "--vg-root", str(root), "--out", str(tmp_path / "out"),
               "--shard-samples", "4", "--workers", "2"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    workers: list[int] = []
    while time.monotonic() < deadline and process.poll() is None and len(workers) < 2:
        workers = [c for c in _children(process.pid) if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
        time.sleep(0.05)
    if process.poll() is not None:
        pytest.skip("the run finished before its workers could be seen")
    time.sleep(1.0)  # past the moment the parent ignores SIGINT while it starts them (fcdata.workers)
    assert process.poll() is None, "the job ended before the signal: make long_job_root larger"
    if how.startswith("kill"):
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    else:
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=60) == 130
        stderr = process.stderr.read().decode()
        progress = re.compile(r"\d\d:\d\d:\d\d fc shard \[")  # plain progress lines: stderr is not a terminal
        messages = [line for line in stderr.splitlines() if line.strip() and not progress.match(line)]
        assert "Traceback" not in stderr and len(messages) <= 2, stderr
    gone_by = time.monotonic() + 10
    while time.monotonic() < gone_by and any(_running(w) for w in workers):
        time.sleep(0.1)
    assert not any(_running(w) for w in workers)


def test_rows_by_image_gather_from_the_chunks_as_one_take_would():
    """_ByImage gives each id's rows in file order (ids it lacks get none) and gathers them from
    a many-chunk table exactly as pyarrow's take on the whole table does."""
    import pyarrow as pa

    from fcdata.shard import _ByImage

    rng = np.random.default_rng(0)
    image_ids = rng.integers(1, 40, 1000)
    batches = [
        pa.record_batch({"image_id": image_ids[a:b], "phrase": [f"p{k}" for k in range(a, b)], "x": np.arange(a, b) * 0.5})
        for a, b in ((0, 1), (1, 300), (300, 301), (301, 1000))
    ]
    table = pa.Table.from_batches(batches)
    groups = _ByImage(table)
    ids = np.array([7, 1, 99, 7, 38])  # 99 is in no row; 7 asked twice
    rows, offsets = groups.rows(ids)
    expected = np.concatenate([np.flatnonzero(image_ids == i) for i in ids])
    np.testing.assert_array_equal(rows, expected)
    assert offsets.tolist() == np.cumsum([0] + [int((image_ids == i).sum()) for i in ids]).tolist()
    taken = groups.take(rows)
    assert taken.equals(table.take(pa.array(rows))) and taken.column(0).num_chunks == 1
    empty = _ByImage(table.schema.empty_table())
    rows, offsets = empty.rows(ids)
    assert len(rows) == 0 and offsets.tolist() == [0] * 6 and empty.take(rows).num_rows == 0
