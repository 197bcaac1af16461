"""Rich progress displays for the library's progress protocols."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


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


class RichShardProgress(_RichDisplay):
    """Implements fcdata.shard.ShardProgress: images/s overall and per worker, shards, skips."""

    note_suffix = "..."

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("[bold]shard"),
            BarColumn(bar_width=16),
            MofNCompleteColumn(),
            TextColumn(
                "{task.fields[rate]} img/s ({task.fields[per_worker]}/worker) "
                "shards {task.fields[shards]} skipped {task.fields[skipped]}"
            ),
            TimeRemainingColumn(),
        )
        self.task = None
        self.skipped = 0
        self.images = 0
        self.busy_seconds = 0.0
        self.shards_done = 0
        self.shards_total = 0

    def start(self, images: int, shards: int, shards_done: int) -> None:
        self.shards_total, self.shards_done = shards, shards_done
        self.task = self.progress.add_task(
            "shard", total=images, rate="-", per_worker="-", shards=self._shards(), skipped=0
        )

    def _shards(self) -> str:
        return f"{self.shards_done}/{self.shards_total}"

    def advance(self, images: int, skipped: int, busy_seconds: float) -> None:
        self.skipped += skipped
        self.images += images
        self.busy_seconds += busy_seconds
        self.progress.update(self.task, advance=images, skipped=self.skipped)
        speed = self.progress.tasks[0].speed
        self.progress.update(
            self.task,
            rate=f"{speed:,.0f}" if speed else "-",
            per_worker=f"{self.images / self.busy_seconds:,.0f}" if self.busy_seconds else "-",
        )

    def shard_done(self) -> None:
        self.shards_done += 1
        self.progress.update(self.task, shards=self._shards())


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
        parts = [f"loss {metrics['loss']:.4f}", f"lr {metrics['lr'].get('lora', 0):.2e}"]
        if metrics.get("samples_per_s"):
            parts.append(f"{metrics['samples_per_s']:,.0f} samples/s")
        if metrics.get("data_wait_fraction") is not None:
            parts.append(f"data wait {100 * metrics['data_wait_fraction']:.0f}%")
        if "peak_mem_gib" in metrics:
            parts.append(f"{metrics['peak_mem_gib']:.1f} GiB")
        if metrics.get("nonfinite_steps"):
            parts.append(f"[red]{metrics['nonfinite_steps']} non-finite")
        self.progress.update(self.task, completed=metrics["step"], status="  ".join(parts))


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
