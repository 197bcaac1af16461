"""`fc shard`'s annotation phase at Visual Genome's scale, beside json.load and orjson, and the
peak memory of a whole `fc shard` run on those files.

The files come from fcdata.synth_scale (VG 1.4's layout and size: 108,077 images, ~5.4M
regions, ~3.8M objects, ~2.3M relationships, ~2.0 GB; `scale` shrinks the image count). Each case
runs in a fresh process so that its peak memory (the whole process tree's resident set,
fcbench.common.TreeMemory) and its page-cache state are its own; the files are read once
beforehand so every case finds them cached.

- fc_shard_workers_N / fc_shard_workers_N_no_relations: `fc shard` (fcdata.shard.shard_vg) on the
  files end to end, with and without relationships.json (`--no-relations`): parse, plan, shard
  tasks, manifest and summary. The corpus has no JPEGs, so every image is skipped as missing and
  the run measures what the annotations cost, not the codec. `peak_mem_gib` is the goal's
  figure: under 3 GB (2.79 GiB) with relationships on 2 workers.
- fc_annotations_workers_N: fcdata.vg.load_vg with N worker processes, started first as fc shard
  starts them; `seconds` from the call to the tables in hand (image_data, region_descriptions,
  objects and relationships, phrases cleaned), with the per-file stages (`scan_s`: the file
  scanned; `ready_s`: its last chunk decoded, both from the start).
- json_load: json.load of region_descriptions.json and objects.json (Python dicts, no columns):
  the plain approach, and what the goal is measured against.
- orjson_loads: orjson.loads of the same bytes (a faster peer parser; the `bench` extra).
- record_scan: fcdata.vg's record scan of region_descriptions.json beside its ceiling, a loop
  that only skips strings (the least any scan must do), MB per CPU second, in this process.
"""

from __future__ import annotations

import json
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from numba import njit

from fcbench.common import TreeMemory, emit, machine_info, record

FILES = ("region_descriptions.json", "objects.json")  # what json.load and orjson read
RELATIONSHIPS = "relationships.json"


def ensure_scale_corpus(work_dir: Path, scale: float, seed: int = 0) -> Path:
    """VG-size annotation files under work_dir (no images), generated once and reused (again
    where an older generator left no relationships.json)."""
    from fcdata.synth_scale import REPORT_FILE, VG_IMAGES, ScaleOptions, generate_vg_scale

    images = max(1, round(VG_IMAGES * scale))
    root = work_dir / f"vg-scale-{images}-s{seed}"
    report = root / REPORT_FILE
    if not report.exists() or "relationships" not in json.loads(report.read_text())["counts"]:
        generate_vg_scale(root, ScaleOptions(num_images=images, seed=seed))
    return root


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _fc_case(root: Path, workers: int) -> dict:
    from fcdata import vg
    from fcdata.shard import _worker_pool

    stages: dict[str, dict] = {}
    with TreeMemory() as memory, _worker_pool(workers) as pool:  # the pool fc shard starts
        started = time.perf_counter()

        def progress(name: str, scanned: int, size: int, decoded: int, records: int) -> None:
            stage = stages.setdefault(name, {})
            if records >= 0 and "scan_s" not in stage:
                stage["scan_s"] = round(time.perf_counter() - started, 2)
            if records >= 0 and decoded == records:
                stage["ready_s"] = round(time.perf_counter() - started, 2)

        annotations = vg.load_vg(root, pool.pool if pool else None, workers, progress=progress)
        seconds = time.perf_counter() - started
    return {
        "seconds": seconds, "cpu_s": _cpu_seconds(), "peak_mem_gib": memory.peak_gib, "stages": stages,
        "regions": annotations.regions.num_rows, "objects": annotations.objects.num_rows,
        "relations": 0 if annotations.relations is None else annotations.relations.num_rows,
    }


def _shard_case(root: Path, workers: int, relations: bool) -> dict:
    """fc shard end to end into a scratch folder beside the corpus, removed afterwards."""
    from fcdata.options import ShardOptions
    from fcdata.shard import shard_vg

    out = root.parent / f"{root.name}-shards-w{workers}{'' if relations else '-no-relations'}"
    shutil.rmtree(out, ignore_errors=True)
    try:
        with TreeMemory() as memory:
            started = time.perf_counter()
            summary = shard_vg(root, out, ShardOptions(workers=workers, relations=relations)).data
            seconds = time.perf_counter() - started
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {
        "seconds": seconds, "cpu_s": _cpu_seconds(), "peak_mem_gib": memory.peak_gib,
        "regions": summary["regions"]["listed"], "objects": None,
        "relations": summary["relations"]["listed"] if "relations" in summary else 0,
    }


def _parser_case(root: Path, parser: str) -> dict:
    if parser == "orjson":
        import orjson

        load = lambda path: orjson.loads(path.read_bytes())  # noqa: E731
    else:
        load = lambda path: json.load(open(path, encoding="utf-8"))  # noqa: E731
    with TreeMemory() as memory:
        started = time.perf_counter()
        held = [load(root / name) for name in FILES]  # both held at once, as a loader needs them
        seconds = time.perf_counter() - started
    counts = [sum(len(record.get(key) or []) for record in records) for records, key in zip(held, ("regions", "objects"))]
    return {"seconds": seconds, "cpu_s": _cpu_seconds(), "peak_mem_gib": memory.peak_gib, "regions": counts[0], "objects": counts[1]}


def _run_case(case: str, root: Path, workers: int) -> dict:
    """One case in a fresh interpreter; its JSON result."""
    result = subprocess.run(
        [sys.executable, "-m", "fcbench.annotations", case, str(root), str(workers)],
        capture_output=True, text=True, timeout=1800,
    )
    if result.returncode != 0:
        raise RuntimeError(f"annotation bench case {case} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


@njit(nogil=True)
def _skip_strings(data):
    """Count the strings of `data` (uint8): the string-skipping loop alone."""
    size, position, strings = data.shape[0], 0, 0
    while position < size:
        if data[position] == 34:
            position += 1
            while position < size:
                byte = data[position]
                if byte == 92:
                    position += 2
                elif byte == 34:
                    break
                else:
                    position += 1
            strings += 1
        position += 1
    return strings


def scan_row(root: Path, repeats: int = 3) -> dict:
    """The record scan vs the string-skipping loop on the same bytes, best of `repeats` (CPU time)."""
    import numpy as np

    from fcdata import vg

    data = np.memmap(root / FILES[0], dtype=np.uint8, mode="r")
    vg.json_array_elements(data[:4096])
    _skip_strings(data[:4096])
    best = {"scan": float("inf"), "ceiling": float("inf")}
    for _ in range(repeats):
        for name, run_once in (("scan", lambda: vg.json_array_elements(data)), ("ceiling", lambda: _skip_strings(data))):
            started = time.process_time()
            run_once()
            best[name] = min(best[name], time.process_time() - started)
    mb = data.size / 1e6
    return {
        "case": "record_scan", "file_mb": round(mb, 1), "scan_mb_per_cpu_s": round(mb / best["scan"]),
        "string_loop_mb_per_cpu_s": round(mb / best["ceiling"]), "scan_vs_string_loop": round(best["ceiling"] / best["scan"], 3),
    }


def _orjson_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("orjson") is not None


def run(work_dir: Path, scale: float = 1.0, workers: tuple[int, ...] = (1, 2), repeats: int = 1) -> list[dict]:
    """Rows for each case, medians over `repeats` interleaved runs (see the module docstring)."""
    root = ensure_scale_corpus(work_dir, scale)
    sizes = {name: (root / name).stat().st_size for name in FILES}
    for name in FILES + (RELATIONSHIPS, "image_data.json"):  # into the page cache: no case pays for the disk
        with open(root / name, "rb") as stream:
            while stream.read(64 << 20):
                pass
    cases = [(f"fc_shard_workers_{n}", "shard", n) for n in workers]
    cases += [(f"fc_shard_workers_{n}_no_relations", "shard-no-relations", n) for n in workers]
    cases += [(f"fc_annotations_workers_{n}", "fc", n) for n in workers] + [("json_load", "json", 1)]
    if _orjson_available():
        cases.append(("orjson_loads", "orjson", 1))
    results: dict[str, list[dict]] = {name: [] for name, _, _ in cases}
    for _ in range(repeats):
        for name, case, count in cases:
            results[name].append(_run_case(case, root, count))
    base = {
        "bench": "shard_annotations", "corpus": root.name, "repeats": repeats,
        "annotation_mib": round(sum(sizes.values()) / 2**20, 1),
        "relationships_mib": round((root / RELATIONSHIPS).stat().st_size / 2**20, 1),
    }
    json_seconds = statistics.median(r["seconds"] for r in results["json_load"])
    rows = []
    for name, case, count in cases:
        runs = results[name]
        row = dict(
            base, case=name, seconds=round(statistics.median(r["seconds"] for r in runs), 2),
            cpu_s=round(statistics.median(r["cpu_s"] for r in runs), 2),
            peak_mem_gib=max(r["peak_mem_gib"] for r in runs),
            regions=runs[0]["regions"], objects=runs[0]["objects"],
        )
        row["vs_json_load"] = round(row["seconds"] / json_seconds, 3)
        if case != "json" and case != "orjson":
            row["workers"] = count
            row["relations"] = runs[0]["relations"]
        if case == "fc":
            row["stages"] = runs[len(runs) // 2]["stages"]
        if case.startswith("shard"):
            row["files"] = "all four" if case == "shard" else "all but relationships.json"
            row["peak_mem_gb"] = round(row["peak_mem_gib"] * 2**30 / 1e9, 3)  # the goal is 3 GB, decimal
            del row["objects"], row["vs_json_load"]  # the summary has no object count; not json.load's work
        rows.append(row)
    if not _orjson_available():
        rows.append(dict(base, case="orjson_loads", skipped="orjson is not installed (a core dependency: pip install orjson)"))
    rows.append(dict(base, **scan_row(root)))
    return rows


def run_and_record(work_dir: Path, scale: float = 1.0, workers: tuple[int, ...] = (2,), repeats: int = 1, save: bool = True) -> list[dict]:
    """`fc bench annotations`: these rows alone, printed and recorded as <date>-shard-annotations-<n>.json."""
    machine = machine_info()
    emit({"bench": "shard_annotations", "machine": machine})
    work_dir.mkdir(parents=True, exist_ok=True)
    rows = run(work_dir, scale, workers, repeats)
    for row in rows:
        emit(row)
    if save:
        emit({"bench": "shard_annotations", "recorded": str(record("shard-annotations", rows, machine))})
    return rows


if __name__ == "__main__":
    case, root_arg, workers_arg = sys.argv[1:4]
    root_path = Path(root_arg)
    if case == "fc":
        outcome = _fc_case(root_path, int(workers_arg))
    elif case.startswith("shard"):
        outcome = _shard_case(root_path, int(workers_arg), relations=case == "shard")
    else:
        outcome = _parser_case(root_path, case)
    print(json.dumps(outcome))
