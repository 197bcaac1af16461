import io
import os
import re
import subprocess
import sys
import time

from fc.progress import LOG_INTERVAL_ENV, LogLines, PlainShardProgress, PlainTrainProgress, rate_and_eta
from fcdata.synth_scale import ScaleOptions, generate_vg_scale


def wait_for_lines(stream: io.StringIO, count: int, timeout_s: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and len(stream.getvalue().splitlines()) < count:
        time.sleep(0.01)
    return stream.getvalue().splitlines()


def test_log_lines_repeat_the_status_periodically():
    """Notes are written at once; the status is repeated every interval from a background
    thread (a log shows life even while one step is long); leaving writes nothing twice."""
    stream = io.StringIO()
    with LogLines("fc test", stream, interval_s=0.02) as lines:
        lines.note("starting")
        assert stream.getvalue().endswith("starting\n")
        lines.status("working on it")
        written = wait_for_lines(stream, 4)
    assert len(written) >= 4
    assert all(re.match(r"\d\d:\d\d:\d\d fc test \[\d+s\]: ", line) for line in written)
    assert sum("working on it" in line for line in written) >= 3


def test_plain_shard_progress_words_both_phases():
    """Annotation lines give bytes scanned, records decoded and a rate; image lines give images
    of the total, rate, shards and skips; each file's last line is written when it lands."""
    stream = io.StringIO()
    with PlainShardProgress(stream, interval_s=60) as progress:
        progress.annotations("objects.json", 2 << 20, 4 << 20, 0, -1)
        assert "reading objects.json: scanned 2/4 MiB" in progress.current
        progress.annotations("objects.json", 4 << 20, 4 << 20, 50, 100)
        assert "decoded 50/100 records" in progress.current
        progress.annotations("objects.json", 4 << 20, 4 << 20, 100, 100)
        assert "decoded 100/100 records" in stream.getvalue()
        progress.start(images=200, shards=4, shards_done=1)
        progress.advance(16, 2, 0.5)
        progress.shard_done()
    last = stream.getvalue().splitlines()[-1]
    assert "16/200 images" in last and "(32/worker busy)" in last and "shards 2/4" in last and "skipped 2" in last


def test_plain_train_progress_has_step_rate_and_metrics():
    """A train line names the step of the total, the pace and the last metrics; val loss at once."""
    stream = io.StringIO()
    with PlainTrainProgress(stream, interval_s=60) as progress:
        progress.start(total_steps=100, first_step=0)
        progress.update({"step": 10, "loss": 2.5, "lr": {"lora": 1e-4}, "samples_per_s": 300.0})
        progress.update({"step": 10, "val_loss": 2.25})
    text = stream.getvalue()
    assert "step 10: val loss 2.2500" in text
    assert re.search(r"step 10/100 \(.* steps/s, ETA .*\)  loss 2\.5000  lr 1\.00e-04  300 samples/s", text)


def test_rate_and_eta():
    """The rate is done / seconds; the ETA is what is left at that rate."""
    assert rate_and_eta(50, 100, 10.0, "img") == "5 img/s, ETA 10s"
    assert rate_and_eta(0, 100, 10.0, "img") == "- img/s"


def test_shard_to_a_log_file_writes_periodic_progress_lines(tmp_path):
    """`fc shard` with its output going to a file (not a terminal) writes plain progress lines
    at the configured interval: the annotation files as they are read, then images and rate."""
    root = tmp_path / "vg"
    generate_vg_scale(root, ScaleOptions(num_images=3000, image_files=60, seed=0))
    log = tmp_path / "shard.log"
    with open(log, "w") as stream:
        result = subprocess.run(
            [sys.executable, "-m", "fc", "shard", "--vg-root", str(root), "--out", str(tmp_path / "out"),
             "--workers", "2", "--shard-samples", "500"],
            stdout=stream, stderr=subprocess.STDOUT, timeout=300,
            env=dict(os.environ, **{LOG_INTERVAL_ENV: "0.05"}),
        )
    text = log.read_text()
    assert result.returncode == 0, text
    progress = [line for line in text.splitlines() if re.match(r"\d\d:\d\d:\d\d fc shard \[", line)]
    assert any("reading region_descriptions.json: scanned" in line and "decoded" in line for line in progress)
    assert any("reading objects.json" in line for line in progress)
    image_lines = [line for line in progress if re.search(r"\d+/3,000 images", line)]
    assert len(image_lines) >= 2, text
    assert "\x1b[" not in text  # no terminal control sequences in a log file


def test_plain_eval_progress_counts_items_of_a_phase():
    """The eval benchmarks' start/advance calls become lines with done of total and pace."""
    from fc.progress import PlainEvalProgress

    stream = io.StringIO()
    with PlainEvalProgress(stream, interval_s=60) as progress:
        progress.start(400, "refcoco testA expressions")
        progress.advance(100)
    lines = stream.getvalue().splitlines()
    assert "refcoco testA expressions: 400 to do" in lines[0]
    assert re.search(r"refcoco testA expressions: 100/400 \(.* items/s, ETA .*\)", lines[-1])


def test_plain_phases_name_the_running_phase():
    """fc eval's per-method callback: each phase announced, the periodic line says for how long."""
    from fc.progress import PlainPhases

    stream = io.StringIO()
    with PlainPhases("fc eval", total=2, stream=stream, interval_s=0.02) as phases:
        phases("whole_image")
        written = wait_for_lines(stream, 3)
    assert "whole_image (1/2)" in written[0]
    assert any(re.search(r"whole_image \(1/2\) for \d+s", line) for line in written[1:])
