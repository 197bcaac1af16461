import subprocess
import sys

import pytest
from typer.testing import CliRunner

from fc.main import app


def fc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fc", *args], capture_output=True, text=True, timeout=300)


def test_help_lists_the_commands():
    """`fc --help` works and names every command."""
    result = fc("--help")
    assert result.returncode == 0
    for command in ("synth", "shard", "bench"):
        assert command in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["shard", "--vg-root", "/nonexistent/vg", "--out", "OUT"], "is not a directory"),
        (["shard", "--vg-root", ".", "--out", "OUT"], "image_data.json not found"),
        (["shard", "--vg-root", ".", "--out", "OUT", "--mask", "fuzzy"], "mask must be"),
        (["synth", "--out", "OUT", "--images", "0"], "images"),
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
    lines = [line for line in result.stderr.splitlines() if line.strip() and "reading annotations" not in line]
    assert len(lines) == 1 and "region_descriptions.json" in lines[0]
