import re
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from fc.main import app


def fc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fc", *args], capture_output=True, text=True, timeout=300)


def test_help_lists_the_commands():
    """`fc --help` works and names every command."""
    result = fc("--help")
    assert result.returncode == 0
    for command in ("demo", "synth", "shard", "masks", "train", "eval", "export", "show", "convert", "bench"):
        assert command in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["shard", "--vg-root", "/nonexistent/vg", "--out", "OUT"], "is not a directory"),
        (["shard", "--vg-root", ".", "--out", "OUT"], "image_data.json not found"),
        (["shard", "--vg-root", ".", "--out", "OUT", "--mask", "fuzzy"], "mask must be"),
        (["synth", "--out", "OUT", "--images", "0"], "images"),
        (["masks", "--shards", "/nonexistent", "--out", "OUT", "--sam-model", "."], "not a folder of shards"),
        (["masks", "--shards", ".", "--out", "OUT", "--sam-model", "."], "no *.tar shards"),
        (["masks", "--shards", ".", "--out", "OUT", "--sam-model", ".", "--batch-images", "0"], "batch-images"),
    ],
)
def test_user_mistakes_are_one_line_errors(tmp_path, args, message):
    """A wrong path or option prints one `error:` line and exits 1, without a traceback."""
    args = [str(tmp_path / a) if a == "OUT" else a for a in args]
    result = subprocess.run(
        [sys.executable, "-m", "fc", *args], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]


def test_synth_then_shard_from_the_command_line(tmp_path):
    """`fc synth` then `fc shard` produce shards and report what they did."""
    runner = CliRunner()
    result = runner.invoke(app, ["synth", "--out", str(tmp_path / "vg"), "--images", "8", "--seed", "2"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app, ["shard", "--vg-root", str(tmp_path / "vg"), "--out", str(tmp_path / "shards"), "--workers", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "8 written of 8" in result.output.replace(",", "")
    assert list((tmp_path / "shards").glob("train-*.tar"))
    again = runner.invoke(
        app, ["shard", "--vg-root", str(tmp_path / "vg"), "--out", str(tmp_path / "shards"), "--workers", "1"]
    )
    assert "already complete" in again.output


def test_errors_after_workers_started_are_still_one_line(tmp_path):
    """A malformed annotation file found while worker processes are running ends in one clean error line."""
    (tmp_path / "image_data.json").write_text('[{"image_id": 1, "width": 5, "height": 5}]')
    (tmp_path / "region_descriptions.json").write_text('[{"id": 1, "regions": [1,,2]}]')
    result = fc("shard", "--vg-root", str(tmp_path), "--out", str(tmp_path / "out"), "--workers", "2")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    progress = re.compile(r"\d\d:\d\d:\d\d fc shard \[")  # plain progress lines: stderr is not a terminal
    lines = [line for line in result.stderr.splitlines() if line.strip() and not progress.match(line)]
    assert len(lines) == 1 and "region_descriptions.json" in lines[0]


@pytest.mark.slow
def test_train_eval_export_show_from_the_command_line(tmp_path):
    """The README's commands chain: shards -> fc train (tiny) -> fc eval -> fc export -> FocusClip, fc show."""
    import json

    from fctrain.api import FocusClip
    from fctrain.model import ALPHA_WEIGHTS, build_model
    from fctrain.config import LoraConfig, ModelConfig

    runner = CliRunner()
    assert runner.invoke(app, ["synth", "--out", str(tmp_path / "vg"), "--images", "40", "--seed", "3"]).exit_code == 0
    result = runner.invoke(app, ["shard", "--vg-root", str(tmp_path / "vg"), "--out", str(tmp_path / "shards"),
                                 "--workers", "1", "--val-fraction", "0.2", "--shard-samples", "16"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", "--shards", str(tmp_path / "shards"), "--out", str(run), "--steps", "4",
                                 "--batch-size", "8", "--set", "data.workers=0", "--set", "model.image_size=32",
                                 "--set", "model.tiny_pretrain_steps=5", "--set", "run.val_every=0",
                                 "--set", "data.relation_ratio=0.5"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["eval", "--run", str(run), "--max-images", "6", "--methods", "focus,whole_image,crop"])
    assert result.exit_code == 0, result.output
    report = json.loads((run / "eval.json").read_text())
    assert set(report["results"]) == {"focus", "whole_image", "crop"} and (run / "eval-examples.png").exists()
    result = runner.invoke(app, ["eval", "--run", str(run), "--benchmark", "vg-relations", "--max-images", "4",
                                 "--methods", "relation_alpha,union_crop"])
    assert result.exit_code == 0, result.output
    relations = json.loads((run / "eval-relations.json").read_text())
    assert set(relations["methods"]) == {"relation_alpha", "union_crop"} and relations["methods"]["union_crop"]["swap"] == 0.5
    result = runner.invoke(app, ["export", "--run", str(run), "--out", str(tmp_path / "model")])
    assert result.exit_code == 0, result.output
    model = FocusClip.load(tmp_path / "model")
    scores = model.score([np.zeros((40, 50, 3), np.uint8)], [None], ["a red circle", "a blue square"])
    assert scores.shape == (1, 2)
    # An exported model brings its alpha conv when training starts from it.
    rebuilt, _ = build_model(ModelConfig(name_or_path=str(tmp_path / "model"), image_size=32), LoraConfig(), None)
    from safetensors.torch import load_file

    assert (rebuilt.alpha_embedding.weight == load_file(str(tmp_path / "model" / ALPHA_WEIGHTS))["weight"]).all()
    result = runner.invoke(app, ["show", "--shards", str(tmp_path / "shards"), "--count", "3", "--out", str(tmp_path / "s.png")])
    assert result.exit_code == 0 and (tmp_path / "s.png").exists()
