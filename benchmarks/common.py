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
        "python": sys.version.split()[0],
        "commit": _commit(),
        "pillow_simd": _version("pillow-simd"),
        "pillow": _version("pillow"),
    }
    for name in ("numpy", "numba", "pyarrow", "torch", "transformers", "peft", "webdataset"):
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
