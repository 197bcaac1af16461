"""The `fc` command under bad input and faults, as a careful user meets them: every case ends in
one `error:` line and exit code 1 (or a counted skip), deletes nothing it did not write, and never
hangs (each command runs under a timeout)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(600)

TIMEOUT_S = 180  # per command: the commands here fail in seconds; a hang would end the test here


def fc(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fc", *map(str, args)], capture_output=True, text=True, timeout=TIMEOUT_S, cwd=cwd
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit code 1, no traceback, and stderr ends in one `error:` line holding each fragment
    (before it, at most the rate-limited log lines of counted skips)."""
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error:"), result.stderr[-2000:]
    assert all(": skipped " in line for line in lines[:-1]), result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[-1], (fragment, lines[-1])
    return lines[-1]


def train_args(shards, out, *extra) -> list[str]:
    return [
        "train", "--shards", shards, "--out", out, "--model", "tiny", "--steps", "2", "--batch-size", "8",
        "--set", "data.workers=0", "--set", "model.image_size=32", "--set", "model.tiny_pretrain_steps=5",
        "--set", "run.val_every=0", *extra,
    ]


@pytest.fixture(scope="module")
def run_dir(good_shards, tmp_path_factory):
    """A finished two-step tiny run on the good shards."""
    from fctrain.config import load_config
    from fctrain.train import train

    out = tmp_path_factory.mktemp("run") / "run"
    config = load_config(None, [
        f'data.shards="{good_shards}"', f'run.out_dir="{out}"', "data.batch_size=8", "data.workers=0",
        "model.image_size=32", "model.tiny_pretrain_steps=5", "run.steps=2", "run.val_every=0",
    ])
    return train(config).run_dir


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- 1. no hang


@pytest.mark.parametrize("fault", ["zero_bytes", "text_file"])
def test_train_on_shards_that_hold_nothing_fails_at_once(shard_faults, tmp_path, fault):
    """A folder whose only shard is 0 bytes, or --shards naming a text file, is one error line
    naming the shard, before the tiny model is built (not a hang)."""
    path = Path(getattr(shard_faults, fault)())
    shards = path.parent if fault == "zero_bytes" else path  # a folder holding only that shard, or the file
    result = fc(*train_args(shards, tmp_path / "run"))
    assert_one_line_error(result, path.name)
    assert not (tmp_path / "run" / "tiny-model").exists()


# ----------------------------------------------------------------------------- 2. export


def test_export_refuses_a_folder_of_other_files_and_a_file(run_dir, tmp_path):
    """fc export never replaces a non-export folder or a file (without --overwrite): their
    contents are untouched."""
    folder = tmp_path / "mine"
    (folder / "sub").mkdir(parents=True)
    (folder / "notes.txt").write_text("mine")
    (folder / "sub" / "data.csv").write_text("a,b\n")
    before = tree(folder)
    assert_one_line_error(fc("export", "--run", run_dir, "--out", folder), "not a Focus-CLIP export", "--overwrite")
    assert tree(folder) == before
    regular = tmp_path / "model.bin"
    regular.write_bytes(b"precious")
    assert_one_line_error(fc("export", "--run", run_dir, "--out", regular), "is not a directory")
    assert regular.read_bytes() == b"precious"


def test_export_replaces_an_earlier_export_only_when_it_holds_nothing_else(run_dir, tmp_path):
    """An earlier export is replaced; one holding a file the export did not write is refused
    until --overwrite."""
    from fctrain.checkpoint import load_trained
    from fctrain.export import METADATA, export_model
    from fcdata.errors import UserError

    model, tokenizer, _ = load_trained(run_dir)
    out = tmp_path / "model"
    export_model(model, tokenizer, out, model.image_size)
    first = tree(out)
    assert set(json.loads((out / METADATA).read_text())["files"]) == set(first)
    export_model(model, tokenizer, out, model.image_size)  # an earlier export: replaced
    assert set(tree(out)) == set(first)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="also holds notes.txt"):
        export_model(model, tokenizer, out, model.image_size)
    assert (out / "notes.txt").read_text() == "mine"
    export_model(model, tokenizer, out, model.image_size, overwrite=True)
    assert not (out / "notes.txt").exists() and set(tree(out)) == set(first)


# ----------------------------------------------------------------------------- 3. one run per folder


def test_train_into_a_run_folder_with_other_settings_is_refused(run_dir, good_shards, tmp_path):
    """A second run into a finished run's folder, or a resume with settings that define another
    run, is refused and leaves the folder as it was; --overwrite starts over and keeps other files."""
    reused = tmp_path / "reused"
    shutil.copytree(run_dir, reused)
    (reused / "notes.txt").write_text("mine")
    before = tree(reused)
    assert_one_line_error(fc(*train_args(good_shards, reused, "--set", "lora.rank=4")), "already holds a training run", "--resume latest")
    assert_one_line_error(
        fc(*train_args(good_shards, reused, "--set", "lora.rank=4", "--resume", "latest")), "lora.rank: 16 -> 4"
    )
    assert tree(reused) == before
    result = fc(*train_args(good_shards, reused, "--set", "lora.rank=4", "--overwrite"))
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [json.loads(line) for line in (reused / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [2]  # the new run's rows only (logged at its last step)
    assert "rank = 4" in (reused / "config.toml").read_text()
    assert sorted(p.name for p in (reused / "checkpoints").iterdir()) == ["step-0000002"]
    assert (reused / "notes.txt").read_text() == "mine"


def test_resume_from_another_runs_checkpoint_is_refused_before_the_model_is_built(run_dir, good_shards, tmp_path):
    """--resume PATH of a run with other settings, or of a folder that is no checkpoint, fails in
    the checks before any model is built or created."""
    other = tmp_path / "other"
    bogus = tmp_path / "not-a-checkpoint"
    bogus.mkdir()
    assert_one_line_error(fc(*train_args(good_shards, other, "--resume", bogus)), "not a checkpoint directory")
    checkpoint = next((run_dir / "checkpoints").iterdir())
    assert_one_line_error(
        fc(*train_args(good_shards, other, "--set", "optim.lr=0.5", "--resume", checkpoint)), "optim.lr: 0.0001 -> 0.5"
    )
    assert not (other / "tiny-model").exists()


# ----------------------------------------------------------------------------- 4. show and eval


def test_show_skips_and_counts_broken_samples_and_fails_when_nothing_is_left(shard_faults, tmp_path):
    """fc show draws the readable samples and reports the skipped ones by reason; with nothing
    readable it is one error line."""
    for make in (shard_faults.zero_bytes, shard_faults.truncated, shard_faults.empty_tar):
        make()
    shard_faults.random_members(every=2)
    shutil.copy(shard_faults.good, tmp_path / "train-99999.tar")
    result = fc("show", "--shards", tmp_path, "--count", "40", "--out", tmp_path / "out" / "s.png")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "empty_shard 2" in result.stdout and "truncated_shard 1" in result.stdout and "bad_image 4" in result.stdout
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    shard_faults.random_members("bad/train-00000.tar", every=1)
    assert_one_line_error(fc("show", "--shards", only_bad, "--out", tmp_path / "b.png"), "no readable sample", "bad_image")
    assert not (tmp_path / "b.png").exists()


def test_eval_images_skip_broken_samples_and_nothing_readable_is_an_error(shard_faults):
    """fc eval's reader counts broken samples by reason; an empty tar alone is a clear error."""
    from fcdata.errors import CountingHandler, UserError
    from fctrain.config import EvalOptions
    from fctrain.evaluation.regions import load_eval_images

    shards = ",".join([shard_faults.random_members(every=2), shard_faults.empty_tar(), shard_faults.good])
    handler = CountingHandler("test")
    images = load_eval_images(EvalOptions(shards=shards, max_images=100), 32, handler)
    assert dict(handler.counts) == {"bad_image": 4, "empty_shard": 1} and len(images) == 12
    with pytest.raises(UserError, match="no usable validation shards"):
        load_eval_images(EvalOptions(shards=shard_faults.empty_tar("train-80000.tar")), 32)


def test_eval_refuses_max_images_zero(run_dir):
    """--max-images 0 is a usage error (exit 1), and the run's eval.json is not touched; the
    library refuses it too."""
    from fcdata.errors import UserError
    from fctrain.config import EvalOptions

    result = fc("eval", "--run", run_dir, "--max-images", "0")
    assert result.returncode == 1 and "Traceback" not in result.stderr and "max-images" in result.stderr
    assert not (run_dir / "eval.json").exists()
    with pytest.raises(UserError, match="max_images >= 1"):
        EvalOptions(max_images=0)


# ----------------------------------------------------------------------------- 5. user mistakes


@pytest.mark.parametrize("command", ["synth", "shard", "train", "export", "show"])
def test_a_read_only_output_is_one_error_line(command, read_only_dir, good_shards, run_dir, tmp_path):
    """--out on a read-only file system: one line naming the path, for every command that writes."""
    out = read_only_dir / "out"
    vg = tmp_path / "vg"
    if command == "shard":
        assert fc("synth", "--out", vg, "--images", "2").returncode == 0
    args = {
        "synth": ["synth", "--out", out, "--images", "2"],
        "shard": ["shard", "--vg-root", vg, "--out", out, "--workers", "1"],
        "train": train_args(good_shards, out),
        "export": ["export", "--run", run_dir, "--out", out],
        "show": ["show", "--shards", good_shards, "--out", out / "s.png"],
    }[command]
    line = assert_one_line_error(fc(*args), str(read_only_dir))
    assert "read-only file system" in line or "permission denied" in line


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--set", "optim.lr=abc"], ["optim.lr must be a number", "'abc'"]),
        (["--set", "run.log_every=\"3\""], ["run.log_every must be an integer"]),
        (["--set", "data.workers=100000"], ["data.workers = 100000"]),
        (["--steps", "abc"], ["--steps"]),  # typer's usage error, under our exit code
        (["--no-such-flag"], ["no-such-flag"]),
    ],
)
def test_bad_settings_are_one_error_line(good_shards, tmp_path, args, fragments):
    """Wrongly typed settings name the key; usage errors exit 1 like every user error."""
    result = fc(*train_args(good_shards, tmp_path / "run", *args))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in result.stderr
    assert not (tmp_path / "run" / "tiny-model").exists()


def test_a_wrongly_typed_toml_value_names_the_key(good_shards, tmp_path):
    """`lr = "fast"` in a TOML file is one line naming optim.lr, not a TypeError deep inside."""
    config = tmp_path / "train.toml"
    config.write_text('[optim]\nlr = "fast"\n')
    assert_one_line_error(fc(*train_args(good_shards, tmp_path / "run", "--config", config)), "optim.lr must be a number")


def test_outputs_of_the_wrong_kind_are_one_error_line(good_shards, tmp_path):
    """fc train --out A_FILE and fc show --out A_FOLDER are one line each; the file is kept."""
    regular = tmp_path / "a-file"
    regular.write_text("mine")
    assert_one_line_error(fc(*train_args(good_shards, regular)), "is not a directory")
    assert regular.read_text() == "mine"
    assert_one_line_error(fc("show", "--shards", good_shards, "--out", tmp_path), "is a folder")


def test_shard_with_far_more_workers_than_cores_runs(tmp_path):
    """fc shard --workers 100000 uses the cores there are instead of dying starting processes."""
    assert fc("synth", "--out", tmp_path / "vg", "--images", "4").returncode == 0
    result = fc("shard", "--vg-root", tmp_path / "vg", "--out", tmp_path / "shards", "--workers", "100000")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "4 written of 4" in result.stderr.replace(",", "")


def test_paths_with_spaces_and_non_ascii_characters(tmp_path):
    """Data, shards and pictures under a path with spaces and non-ASCII letters."""
    root = tmp_path / "données d'été" / "vg 1"
    assert fc("synth", "--out", root, "--images", "4").returncode == 0
    shards = tmp_path / "données d'été" / "shärds x"
    result = fc("shard", "--vg-root", root, "--out", shards, "--workers", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    result = fc("show", "--shards", shards, "--count", "2", "--out", shards / "bild ü.png")
    assert result.returncode == 0 and (shards / "bild ü.png").stat().st_size > 0, result.stderr[-2000:]
