"""What every benchmark shares: machine details, JSON rows, and dated result files."""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
            capture_output=True, text=True, timeout=5,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=Path(__file__).parent,
            capture_output=True, text=True, timeout=5,
        ).stdout.strip()
        return result.stdout.strip() + ("+dirty" if dirty else "") if result.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info() -> dict:
    info = {
        "date": datetime.date.today().isoformat(),
        "cpu": _cpu_model(),
        "cores_available": len(os.sched_getaffinity(0)),
        # Runnable processes (1-minute average) when the run began: above the core count, the
        # machine was shared and absolute rates are low; ratios within a run still hold.
        "load_average_1m": round(os.getloadavg()[0], 2),
        "python": sys.version.split()[0],
        "commit": _commit(),
        "pillow_simd": _version("pillow-simd"),
        "pillow": _version("pillow"),
    }
    for name in ("numpy", "numba", "pyarrow", "torch", "transformers", "peft", "webdataset", "orjson", "simplejpeg",
                 "torchvision", "spdl-io", "nvidia-dali-cuda120"):
        info[name] = _version(name)
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name()
    except ImportError:
        pass
    return info


def emit(row: dict) -> None:
    print(json.dumps(row, sort_keys=True), flush=True)


def record(bench: str, rows: list[dict], machine: dict, results_dir: Path = RESULTS_DIR) -> Path:
    """Write the rows and the machine they ran on to results/<date>-<bench>-<n>.json."""
    results_dir.mkdir(parents=True, exist_ok=True)
    index = 1
    while (path := results_dir / f"{machine['date']}-{bench}-{index}.json").exists():
        index += 1
    path.write_text(json.dumps({"bench": bench, "machine": machine, "rows": rows}, indent=2) + "\n")
    return path


class TreeMemory:
    """Peak resident memory of this process and all its descendants, sampled from /proc every
    `interval_s` in a background thread (ru_maxrss gives one process's peak, not the tree's sum).
    RSS counts file pages mapped in (a memory-mapped input being scanned), as the kernel does."""

    def __init__(self, interval_s: float = 0.02):
        import threading

        self.interval_s = interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._page = os.sysconf("SC_PAGE_SIZE")

    def __enter__(self) -> "TreeMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, self.sample())

    @property
    def peak_gib(self) -> float:
        return round(self.peak_bytes / 2**30, 3)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_bytes = max(self.peak_bytes, self.sample())

    def sample(self) -> int:
        total, pending = 0, [os.getpid()]
        while pending:
            pid = pending.pop()
            try:
                total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * self._page
                for task in Path(f"/proc/{pid}/task").iterdir():
                    pending += [int(c) for c in (task / "children").read_text().split()]
            except (OSError, ValueError):
                continue  # the process ended between listing and reading
        return total
