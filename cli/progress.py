"""Progress displays for the library's progress protocols: live rich bars in a terminal, periodic
plain lines when output goes to a file or a pipe (a cluster job's log shows life and rate).

Reusable pieces for any long command:
- `LogLines`: notes at once, and the current status every `FC_LOG_INTERVAL_S` seconds (default
  10) from a background thread, so a log gets a line even while one step of work is long.
- `display(console, rich_factory, plain_factory)`: the one that fits where stderr goes.
- `rate_and_eta`: the rate and time-left wording both kinds share.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Callable, TextIO

from rich.progress import (
    BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
)

LOG_INTERVAL_ENV = "FC_LOG_INTERVAL_S"
DEFAULT_LOG_INTERVAL_S = 10.0


def log_interval_s() -> float:
    """Seconds between plain progress lines: FC_LOG_INTERVAL_S, default 10."""
    raw = os.environ.get(LOG_INTERVAL_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_LOG_INTERVAL_S
    except ValueError:
        value = DEFAULT_LOG_INTERVAL_S
    return value if value > 0 else DEFAULT_LOG_INTERVAL_S


def display(console, rich_factory: Callable[[], object], plain_factory: Callable[[], object]):
    """A rich display where `console` is a terminal, else periodic plain lines."""
    return rich_factory() if console.is_terminal else plain_factory()


def duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def rate_and_eta(done: float, total: float, seconds: float, unit: str, scale: float = 1.0) -> str:
    """'R unit/s, ETA T' from `done` of `total` in `seconds` (R in units of `scale`)."""
    if seconds <= 0 or done <= 0:
        return f"- {unit}/s"
    rate = done / seconds
    text = f"{rate / scale:,.0f} {unit}/s"
    if total > done:
        text += f", ETA {duration((total - done) / rate)}"
    return text


class LogLines:
    """Plain progress lines: `note` prints at once; `status` sets what the next periodic line
    (every `interval_s`) says. Used as a context manager; leaving it prints the last status."""

    def __init__(self, command: str, stream: TextIO | None = None, interval_s: float | None = None):
        self.command = command
        self.stream = stream if stream is not None else sys.stderr
        self.interval_s = interval_s if interval_s is not None else log_interval_s()
        self.current = ""
        self.printed = ""
        self.started = self.last_write = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self):
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="fc-progress-lines", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if exc_type is None and self.current and self.current != self.printed:
            self._write(self.current)

    def note(self, message: str) -> None:
        self._write(message)

    def status(self, text: str) -> None:
        self.current = text

    def _run(self) -> None:
        # A line is due one interval after the last one, whoever wrote it (a note resets the clock).
        while True:
            remaining = self.last_write + self.interval_s - time.monotonic()
            if remaining > 0:
                if self._stop.wait(remaining):
                    return
                continue
            text = self._heartbeat()
            if text:
                self._write(text)
            elif self._stop.wait(self.interval_s):
                return

    def _heartbeat(self) -> str:
        return self.current

    def _write(self, text: str) -> None:
        elapsed = duration(time.monotonic() - self.started)
        with self._lock:
            self.stream.write(f"{time.strftime('%H:%M:%S')} {self.command} [{elapsed}]: {text}\n")
            self.stream.flush()
            self.printed = text
            self.last_write = time.monotonic()


class _RichDisplay:
    """A rich Progress started and stopped as a context manager, with notes printed above it."""

    progress: Progress
    note_suffix = ""

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def note(self, message: str) -> None:
        self.progress.console.print(f"[dim]{message}{self.note_suffix}")


# ----------------------------------------------------------------------------- fc shard


class _ShardStatus:
    """What fcdata.shard.ShardProgress reports, kept as counts and worded for either display."""

    def __init__(self) -> None:
        self.files: dict[str, dict] = {}
        self.images_total = self.images = self.skipped = 0
        self.busy_seconds = 0.0
        self.shards_done = self.shards_total = 0
        self.images_started = 0.0

    def file_status(self, name: str, scanned: int, size: int, decoded: int, records: int) -> tuple[str, float]:
        """(status line, fraction done) of one annotation file; the scan counts as a tenth."""
        now = time.monotonic()
        state = self.files.setdefault(name, {"started": now, "decode_started": None})
        mib = 2**20
        if records < 0:
            text = f"scanned {scanned / mib:,.0f}/{size / mib:,.0f} MiB, " + rate_and_eta(
                scanned, size, now - state["started"], "MiB", mib
            )
            return text, 0.1 * scanned / max(1, size)
        if state["decode_started"] is None:
            state["decode_started"] = now
        text = f"scanned {size / mib:,.0f} MiB, decoded {decoded:,}/{records:,} records, " + rate_and_eta(
            decoded, records, now - state["decode_started"], "records"
        )
        return text, 0.1 + 0.9 * decoded / max(1, records)

    def start(self, images: int, shards: int, shards_done: int) -> None:
        self.images_total, self.shards_total, self.shards_done = images, shards, shards_done
        self.images_started = time.monotonic()

    def advance(self, images: int, skipped: int, busy_seconds: float) -> None:
        self.images += images
        self.skipped += skipped
        self.busy_seconds += busy_seconds

    def image_status(self) -> str:
        per_worker = f"{self.images / self.busy_seconds:,.0f}" if self.busy_seconds else "-"
        return (
            f"{self.images:,}/{self.images_total:,} images, "
            + rate_and_eta(self.images, self.images_total, time.monotonic() - self.images_started, "img")
            + f" ({per_worker}/worker busy), shards {self.shards_done}/{self.shards_total}, skipped {self.skipped:,}"
        )


class RichShardProgress(_RichDisplay):
    """Implements fcdata.shard.ShardProgress: a bar per annotation file (bytes scanned, records
    decoded, rate, ETA), then images/s overall and per worker, shards, skips."""

    note_suffix = "..."

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(bar_width=16), TextColumn("{task.fields[status]}"),
        )
        self.state = _ShardStatus()
        self.file_tasks: dict[str, int] = {}
        self.task = None

    def annotations(self, name: str, scanned_bytes: int, total_bytes: int, decoded: int, records: int) -> None:
        text, fraction = self.state.file_status(name, scanned_bytes, total_bytes, decoded, records)
        if name not in self.file_tasks:
            self.file_tasks[name] = self.progress.add_task(name, total=1.0, status="")
        self.progress.update(self.file_tasks[name], completed=fraction, status=text)

    def start(self, images: int, shards: int, shards_done: int) -> None:
        self.state.start(images, shards, shards_done)
        self.task = self.progress.add_task("shard", total=images, status=self.state.image_status())

    def advance(self, images: int, skipped: int, busy_seconds: float) -> None:
        self.state.advance(images, skipped, busy_seconds)
        self.progress.update(self.task, advance=images, status=self.state.image_status())

    def shard_done(self) -> None:
        self.state.shards_done += 1
        self.progress.update(self.task, status=self.state.image_status())


class PlainShardProgress(LogLines):
    """Implements fcdata.shard.ShardProgress as periodic log lines (see LogLines)."""

    def __init__(self, stream: TextIO | None = None, interval_s: float | None = None) -> None:
        super().__init__("fc shard", stream, interval_s)
        self.state = _ShardStatus()

    def annotations(self, name: str, scanned_bytes: int, total_bytes: int, decoded: int, records: int) -> None:
        text, _ = self.state.file_status(name, scanned_bytes, total_bytes, decoded, records)
        self.status(f"reading {name}: {text}")
        if records >= 0 and decoded == records:
            self.note(self.current)  # each file's last line, whenever it lands

    def start(self, images: int, shards: int, shards_done: int) -> None:
        self.state.start(images, shards, shards_done)
        self.status(self.state.image_status())

    def advance(self, images: int, skipped: int, busy_seconds: float) -> None:
        self.state.advance(images, skipped, busy_seconds)
        self.status(self.state.image_status())

    def shard_done(self) -> None:
        self.state.shards_done += 1
        self.status(self.state.image_status())


# ----------------------------------------------------------------------------- fc train


def train_status(metrics: dict) -> str:
    parts = [f"loss {metrics['loss']:.4f}", f"lr {metrics['lr'].get('lora', 0):.2e}"]
    if metrics.get("samples_per_s"):
        parts.append(f"{metrics['samples_per_s']:,.0f} samples/s")
    if metrics.get("data_wait_fraction") is not None:
        parts.append(f"data wait {100 * metrics['data_wait_fraction']:.0f}%")
    if "peak_mem_gib" in metrics:
        parts.append(f"{metrics['peak_mem_gib']:.1f} GiB")
    if metrics.get("nonfinite_steps"):
        parts.append(f"{metrics['nonfinite_steps']} non-finite")
    return "  ".join(parts)


class RichTrainProgress(_RichDisplay):
    """Implements fctrain.train.TrainProgress: a bar over steps with loss, lr, samples/s, data wait, memory."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(bar_width=16),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeRemainingColumn(),
        )
        self.task = None

    def start(self, total_steps: int, first_step: int) -> None:
        self.task = self.progress.add_task("train", total=total_steps, completed=first_step, status="")

    def update(self, metrics: dict) -> None:
        if "val_loss" in metrics:
            self.progress.console.print(f"step {metrics['step']}: val loss {metrics['val_loss']:.4f}")
            return
        self.progress.update(self.task, completed=metrics["step"], status=train_status(metrics))


class PlainTrainProgress(LogLines):
    """Implements fctrain.train.TrainProgress as periodic log lines: step of total, the last
    metrics row, steps/s and ETA; validation losses at once."""

    def __init__(self, stream: TextIO | None = None, interval_s: float | None = None) -> None:
        super().__init__("fc train", stream, interval_s)
        self.total_steps = self.first_step = 0
        self.step_clock = time.monotonic()

    def start(self, total_steps: int, first_step: int) -> None:
        self.total_steps, self.first_step = total_steps, first_step
        self.step_clock = time.monotonic()
        self.status(f"step {first_step}/{total_steps}")

    def update(self, metrics: dict) -> None:
        if "val_loss" in metrics:
            self.note(f"step {metrics['step']}: val loss {metrics['val_loss']:.4f}")
            return
        step = metrics["step"]
        pace = rate_and_eta(step - self.first_step, self.total_steps - self.first_step, time.monotonic() - self.step_clock, "steps")
        self.status(f"step {step}/{self.total_steps} ({pace})  {train_status(metrics)}")


# ----------------------------------------------------------------------------- fc eval


class RichPhases(_RichDisplay):
    """A `progress(phase name)` callback (fctrain.evaluation.regions) as a spinner naming the phase."""

    def __init__(self, title: str, total: int) -> None:
        self.progress = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), TimeElapsedColumn())
        self.title, self.total, self.done = title, total, 0
        self.task = self.progress.add_task(title, total=None)

    def __call__(self, phase: str) -> None:
        self.done += 1
        self.progress.update(self.task, description=f"{self.title}: {phase} ({self.done}/{self.total})")


class PlainPhases(LogLines):
    """A `progress(phase name)` callback (fctrain.evaluation.regions) as log lines: each phase when it
    begins, and a periodic line saying which phase is running and for how long."""

    def __init__(self, command: str, total: int, stream: TextIO | None = None, interval_s: float | None = None):
        super().__init__(command, stream, interval_s)
        self.total, self.done = total, 0
        self.phase_started = time.monotonic()
        self.phase = ""

    def __call__(self, phase: str) -> None:
        self.done += 1
        self.phase, self.phase_started = phase, time.monotonic()
        self.note(f"{phase} ({self.done}/{self.total})")
        self.status(f"{phase} ({self.done}/{self.total})")

    def _heartbeat(self) -> str:
        if not self.phase:
            return ""
        return f"{self.phase} ({self.done}/{self.total}) for {duration(time.monotonic() - self.phase_started)}"

    def __exit__(self, *exc) -> None:
        self.current = ""  # phases are announced as they begin: nothing to add at the end
        super().__exit__(*exc)


class RichEvalProgress(_RichDisplay):
    """Implements fctrain.evaluation.common.EvalProgress: a bar over a benchmark's images."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("[bold]eval {task.description}"), BarColumn(bar_width=16), MofNCompleteColumn(), TimeRemainingColumn(),
        )
        self.task = None

    def start(self, total: int, what: str) -> None:
        self.task = self.progress.add_task(what, total=total)

    def advance(self, count: int) -> None:
        self.progress.update(self.task, advance=count)


class PlainEvalProgress(LogLines):
    """The eval benchmarks' progress protocol (start(total, what), advance(count)) as periodic
    log lines: images done of the total, rate and ETA."""

    def __init__(self, stream: TextIO | None = None, interval_s: float | None = None) -> None:
        super().__init__("fc eval", stream, interval_s)
        self.total = self.done = 0
        self.what = ""
        self.phase_started = time.monotonic()

    def start(self, total: int, what: str) -> None:
        self.total, self.done, self.what = total, 0, what
        self.phase_started = time.monotonic()
        self.note(f"{what}: {total:,} to do")
        self.status(f"{what}: 0/{total:,}")

    def advance(self, count: int) -> None:
        self.done += count
        pace = rate_and_eta(self.done, self.total, time.monotonic() - self.phase_started, "items")
        self.status(f"{self.what}: {self.done:,}/{self.total:,} ({pace})")
