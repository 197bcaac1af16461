"""The prepared GPU check: one run that proves the CUDA path and measures it, in under 8 minutes.

A GPU machine is lent rarely and for minutes, so everything it should show is asked in one go
(`bash benchmarks/gpu_check.sh OUT`, or `fc bench gpu-check OUT`). Stages, each in its own
process with a time budget; a stage that overruns is killed and the run goes on:

1. env        GPU, driver, torch/CUDA versions; a measured bf16 matmul peak (the MFU denominator)
2. gpu_tests  `pytest -m gpu -x`: every CUDA-only path (tests/fctrain/test_gpu.py)
3. step       fcbench.step.sweep: ViT-B/16 at 224, bf16, LoRA / +checkpointing / full vision over
              batches 64-512, fp16 at LoRA's best batch, and a 16-GB memory cap
4. loader     fcbench.loader with 14 workers, feeding the GPU through the trainer's prefetcher
5. train      fctrain.train on generated shards: ViT-B/16 with random weights, ~150 bf16 steps with
              checkpointing, then a resume from its step-100 checkpoint (its losses beside the first run's)

OUT/gpu_check.json holds every stage's result or error (rewritten after each stage, so a run cut
short keeps what finished) and the issue's targets beside the measured numbers; OUT/<stage>.log
holds each stage's output. Nothing else goes to OUT (the device tool brings back 8 files at most):
stages work in a scratch folder that is removed at the end. `--cpu` runs the same stages at tiny
sizes on CPU (a test runs it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

RESULT = "gpu_check.json"


@dataclass(frozen=True)
class Sizes:
    """What a stage runs at: the real check on a GPU, or tiny on CPU."""

    matmul_n: int
    arch: str  # fcbench.step.ARCHS
    image_size: int
    batches: tuple[int, ...]
    bench_steps: int
    loader_workers: int
    loader_images: int
    loader_views: int
    loader_batch: int
    train_images: int
    train_batch: int
    train_steps: int
    train_checkpoint_every: int
    train_workers: int


GPU = Sizes(matmul_n=8192, arch="vit-b16", image_size=224, batches=(64, 128, 256, 512), bench_steps=3,
            loader_workers=14, loader_images=1400, loader_views=8000, loader_batch=256,
            train_images=2400, train_batch=256, train_steps=150, train_checkpoint_every=100, train_workers=14)
CPU = Sizes(matmul_n=256, arch="tiny", image_size=32, batches=(2, 4), bench_steps=1,
            loader_workers=1, loader_images=30, loader_views=64, loader_batch=16,
            train_images=30, train_batch=8, train_steps=4, train_checkpoint_every=2, train_workers=0)

# Seconds per stage on the GPU machine (they sum to 7 min 50 s) and on CPU (a loaded 2-core box).
BUDGETS_S = {"env": 25, "gpu_tests": 170, "step": 100, "loader": 75, "train": 100}
CPU_BUDGETS_S = {"env": 60, "gpu_tests": 120, "step": 120, "loader": 120, "train": 180}
TARGETS = {
    "lora_bf16_mfu_at_best_batch": ">= 0.40 (moonshot 0.50)",
    "train_data_wait_fraction": "< 0.05 with 14 loader workers",
    "lora_checkpointing_batch256_peak_gib": "< 40",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="results folder (created; gpu_check.json and the logs go there)")
    parser.add_argument("--cpu", action="store_true", help="the same stages at tiny sizes on CPU")
    parser.add_argument("--stages", default=",".join(BUDGETS_S), help="comma-separated subset, in order")
    parser.add_argument("--stage", help=argparse.SUPPRESS)  # internal: run one stage in this process
    parser.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)  # internal: the stage's work folder
    args = parser.parse_args(argv)
    if args.stage:
        return run_stage(args.stage, args.scratch, args.cpu)
    from fcdata.errors import UserError

    try:
        return check(args.out, args.cpu, [s for s in args.stages.split(",") if s])
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def check(out: Path, cpu: bool, stages: list[str], budgets: dict[str, float] | None = None) -> int:
    """Run the stages one after another, each in a child process under its budget; write
    OUT/gpu_check.json after each. Returns 0 when every stage finished ok, else 1."""
    from fcdata.errors import UserError

    unknown = [s for s in stages if s not in BUDGETS_S]
    if unknown or not stages:
        raise UserError(f"unknown stage {unknown[0]!r}; the stages are {', '.join(BUDGETS_S)}" if unknown
                        else f"no stage given; the stages are {', '.join(BUDGETS_S)}")
    budgets = budgets or (CPU_BUDGETS_S if cpu else BUDGETS_S)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"mode": "cpu" if cpu else "cuda", "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "budgets_s": {s: budgets[s] for s in stages}, "stages": {}}
    scratch = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    # Stages run in sessions of their own (so a stage is killed with all it started); a SIGTERM to
    # this process must still take the running stage down rather than leave it on the GPU.
    from fcdata.outputs import write_json_atomically

    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        for stage in stages:
            print(f"gpu_check: {stage} (budget {budgets[stage]} s)", flush=True)
            report["stages"][stage] = outcome = _run_child(stage, out, scratch, cpu, budgets[stage])
            print(f"gpu_check: {stage} {outcome['status']} in {outcome['seconds']} s", flush=True)
            report["summary"] = summarise(report["stages"])
            write_json_atomically(out / RESULT, report)
    finally:
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(scratch, ignore_errors=True)
    failed = [s for s, o in report["stages"].items() if o["status"] != "ok"]
    print(f"gpu_check: wrote {out / RESULT}" + (f"; not ok: {', '.join(failed)}" if failed else "; all stages ok"))
    return 1 if failed else 0


def _run_child(stage: str, out: Path, scratch: Path, cpu: bool, budget_s: float) -> dict:
    """One stage in its own process group, killed with everything it started when over budget."""
    command = [sys.executable, "-m", "fcbench.gpu_check", str(out), "--stage", stage, "--scratch", str(scratch)]
    command += ["--cpu"] if cpu else []
    stage_file = scratch / f"{stage}.json"
    stage_file.unlink(missing_ok=True)
    started = time.perf_counter()
    with open(out / f"{stage}.log", "w") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                 env=dict(os.environ, PYTHONUNBUFFERED="1"))
        try:
            code = child.wait(timeout=budget_s)
            status = "ok" if code == 0 else "error"
        except subprocess.TimeoutExpired:
            _kill_group(child)
            code, status = None, "timeout"
        except BaseException:  # interrupted (Ctrl-C, SIGTERM): the stage goes with us
            _kill_group(child)
            raise
    outcome: dict = {"status": status, "seconds": round(time.perf_counter() - started, 1), "budget_s": budget_s,
                     "exit_code": code, "log": f"{stage}.log"}
    if stage_file.exists():
        outcome["result"] = json.loads(stage_file.read_text())
        if outcome["result"].get("failed"):  # the stage ran but what it checks did not pass
            outcome["status"] = "failed" if status == "ok" else status
    if status != "ok":
        # Where it stopped or failed: the end of its log.
        outcome["error"] = ("over its time budget; stopped. " if status == "timeout" else "") + _tail(out / f"{stage}.log")
    return outcome


def _exit_on_sigterm(number, frame) -> None:
    raise SystemExit(128 + number)


def _kill_group(child: subprocess.Popen) -> None:
    """SIGTERM to the stage's whole process group (its pytest, loader workers...), 5 s to go,
    then SIGKILL to whatever is left of the group."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:  # nothing left in the group
            return
        try:
            child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def _tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# ----------------------------------------------------------------------------- the stages


def run_stage(stage: str, scratch: Path, cpu: bool) -> int:
    """In the child: run one stage in the scratch folder and write its result there (<stage>.json)."""
    import torch

    if not cpu and not torch.cuda.is_available():
        print(f"gpu_check: stage {stage}: CUDA is not available here (use --cpu for the CPU check)", file=sys.stderr)
        return 1
    from fcdata.outputs import write_json_atomically

    sizes = CPU if cpu else GPU
    result = {"env": env_stage, "gpu_tests": tests_stage, "step": step_stage, "loader": loader_stage,
              "train": train_stage}[stage](scratch, sizes, cpu)
    write_json_atomically(scratch / f"{stage}.json", result)
    return 0


def env_stage(scratch: Path, sizes: Sizes, cpu: bool) -> dict:
    import torch

    from fcbench.common import machine_info

    result = {"machine": machine_info(), "torch": torch.__version__, "cuda": torch.version.cuda,
              "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
    if not cpu:
        properties = torch.cuda.get_device_properties(0)
        result.update(gpu=properties.name, gpu_memory_gib=round(properties.total_memory / 2**30, 1),
                      multiprocessors=properties.multi_processor_count,
                      compute_capability=f"{properties.major}.{properties.minor}", driver=_driver_version())
    result["bf16_matmul_tflops"] = float(f'{matmul_tflops(sizes.matmul_n, torch.device("cpu" if cpu else "cuda")):.4g}')
    result["matmul_n"] = sizes.matmul_n
    return result


def _driver_version() -> str | None:
    try:
        answer = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=20)
        return answer.stdout.strip().splitlines()[0] if answer.returncode == 0 and answer.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def matmul_tflops(n: int, device, warmup: int = 3, repeats: int = 10) -> float:
    """Mean TFLOP/s of n x n x n bf16 matrix products on random data (2 n^3 FLOP each)."""
    import torch

    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(warmup):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 2 * n**3 * repeats / (time.perf_counter() - started) / 1e12


def tests_stage(scratch: Path, sizes: Sizes, cpu: bool) -> dict:
    """pytest -m gpu -x; counts and the failures from its JUnit XML. On CPU they skip: the stage
    then shows only that the plumbing works (their CPU variants run in the normal suite), so it
    collects only the GPU test module there instead of the whole suite."""
    import xml.etree.ElementTree as ElementTree

    root = Path(__file__).resolve().parent.parent
    report = scratch / "gpu_tests.xml"
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-x", "-q", "-p", "no:cacheprovider",
               f"--junitxml={report}", str(root / "tests" / ("fctrain/test_gpu.py" if cpu else ""))]
    code = subprocess.run(command, cwd=root).returncode
    if not report.exists():
        return {"exit_code": code, "failed": True, "error": "pytest wrote no report"}
    suite = ElementTree.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    failures = []
    for case in suite.iter("testcase"):
        for problem in list(case.findall("failure")) + list(case.findall("error")):
            failures.append({"test": f"{case.get('classname')}::{case.get('name')}",
                             "message": (problem.get("message") or "")[:500]})
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return dict(counts, passed=passed, exit_code=code, failures=failures, failed=code not in (0, 5))


def _peak_tflops(scratch: Path) -> float | None:
    """The env stage's measured peak, if it ran: MFU of this run is against this machine's peak."""
    env = scratch / "env.json"
    return json.loads(env.read_text()).get("bf16_matmul_tflops") if env.exists() else None


def step_stage(scratch: Path, sizes: Sizes, cpu: bool) -> dict:
    from fcbench.step import sweep

    rows = sweep(batches=sizes.batches, image_size=sizes.image_size, steps=sizes.bench_steps,
                 device="cpu" if cpu else "cuda", arch=sizes.arch,
                 peak_tflops=None if cpu else _peak_tflops(scratch), memory_cap_gib=None if cpu else 16.0, save=False)
    return {"rows": rows, "peak_tflops": _peak_tflops(scratch)}


def loader_stage(scratch: Path, sizes: Sizes, cpu: bool) -> dict:
    from fcbench.loader import run

    work = scratch / "work-loader"
    # Peers left out: they are CPU comparisons (fc bench loader), not what feeds this GPU.
    rows = run(None, work, images=sizes.loader_images, size=sizes.image_size, batch_size=sizes.loader_batch,
               workers=(sizes.loader_workers,), repeats=1, save=False, views=sizes.loader_views, peers=(), stages=False)
    shutil.rmtree(work, ignore_errors=True)
    device = [r for r in rows if r["case"].startswith("loader_device_decode_to_gpu")]
    # data.decode = "device": JPEG bytes from the workers, nvJPEG decode + crop/resize/flip on the GPU.
    return {"rows": rows, "gpu_decode": device[0] if device else "not run: no CUDA"}


def train_stage(scratch: Path, sizes: Sizes, cpu: bool) -> dict:
    """fc train's library call on generated shards, then a resume from the first checkpoint; the
    resumed run's losses beside the uninterrupted run's (exactness is asserted by the GPU tests)."""
    from fcdata.options import ShardOptions, SynthOptions
    from fcdata.shard import shard_vg
    from fcdata.synth import generate_vg
    from fctrain.config import load_config
    from fctrain.train import train

    work = scratch / "work-train"
    shutil.rmtree(work, ignore_errors=True)
    generate_vg(work / "vg", SynthOptions(num_images=sizes.train_images, seed=0, long_side_px=(300, 400),
                                          workers=1 if cpu else 0))
    shard_vg(work / "vg", work / "shards", ShardOptions(shard_samples=50, val_fraction=0.05, workers=1 if cpu else 0))
    model = random_clip(work / "model", work / "shards", sizes.arch, sizes.image_size)
    settings = [
        f'data.shards="{work / "shards"}"', f'model.name_or_path="{model}"', f"model.image_size={sizes.image_size}",
        f"data.batch_size={sizes.train_batch}", f"data.workers={sizes.train_workers}", f"run.steps={sizes.train_steps}",
        f"checkpoint.every_steps={sizes.train_checkpoint_every}", "run.log_every=10" if not cpu else "run.log_every=1",
        "run.val_every=0", "model.gradient_checkpointing=true",
        f'optim.amp="{"fp32" if cpu else "bf16"}"', f'run.device="{"cpu" if cpu else "cuda"}"',
    ]
    started = time.perf_counter()
    first = train(load_config(None, settings + [f'run.out_dir="{work / "run"}"']))
    first_s = time.perf_counter() - started
    resumed_dir = work / "resumed"
    shutil.copytree(first.run_dir, resumed_dir, ignore=shutil.ignore_patterns("step-%07d" % sizes.train_steps))
    (resumed_dir / "metrics.jsonl").unlink()
    started = time.perf_counter()
    train(load_config(None, settings + [f'run.out_dir="{resumed_dir}"', 'checkpoint.resume="latest"']))
    resume_s = time.perf_counter() - started
    rows = _metrics(first.run_dir)
    again = {r["step"]: r["loss"] for r in _metrics(resumed_dir) if "loss" in r}
    reference = {r["step"]: r["loss"] for r in rows if "loss" in r}
    shared = sorted(set(again) & set(reference))
    differences = [abs(again[s] - reference[s]) / max(abs(reference[s]), 1e-12) for s in shared]
    steady = [r for r in rows if "data_wait_fraction" in r][1:] or rows  # the first window holds start-up
    result = {
        "model": f"{sizes.arch} (random weights)", "steps": first.step, "seconds": round(first_s, 1),
        "resume_seconds": round(resume_s, 1), "metrics": rows,
        "samples_per_s": _mean(r.get("samples_per_s") for r in steady),
        # Each epoch restarts the loader's workers: on this small corpus (~18 steps an epoch; VG's
        # are ~800) that weighs on the mean, hence the median beside it.
        "data_wait_fraction": _mean(r.get("data_wait_fraction") for r in steady),
        "data_wait_fraction_median": _median(r.get("data_wait_fraction") for r in steady),
        "peak_mem_gib": max((r["peak_mem_gib"] for r in rows if "peak_mem_gib" in r), default=None),
        "resumed_steps_compared": shared,
        "resume_max_relative_loss_difference": max(differences) if differences else None,
        "nonfinite_steps": first.metrics.get("nonfinite_steps"),
    }
    shutil.rmtree(work, ignore_errors=True)
    result["failed"] = not shared or first.step != sizes.train_steps
    return result


def random_clip(out_dir: Path, shards: Path, arch: str, image_size: int) -> Path:
    """A CLIPModel folder (fcbench.step.ARCHS[arch]) with random weights and a tokenizer trained
    on the shards' phrases (no checkpoint can be downloaded here): what `--model` reads."""
    from transformers import CLIPModel

    from fcbench.step import ARCHS
    from fcdata.loader import resolve_shards
    from fctrain.tokenizer import build_tokenizer
    from fctrain.train import train_phrases

    tokenizer = build_tokenizer(train_phrases(resolve_shards(str(shards))), out_dir)
    config = ARCHS[arch](image_size)
    config.text_config.vocab_size = len(tokenizer)
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(config.text_config, name, getattr(tokenizer, name))
    CLIPModel(config).save_pretrained(out_dir)
    return out_dir


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _median(values) -> float | None:
    import statistics

    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(sum(values) / len(values), 4) if values else None


# ----------------------------------------------------------------------------- the summary


def summarise(stages: dict) -> dict:
    """The issue's targets beside what this run measured (measured, never asserted)."""

    def result(name: str) -> dict:
        return stages.get(name, {}).get("result") or {}

    step_rows = result("step").get("rows", [])
    fitted = [r for r in step_rows if "samples_per_s" in r and "memory_cap_gib" not in r]
    lora = [r for r in fitted if r["case"] == "lora" and r["dtype"] in ("bfloat16", "fp32")]
    best = max(lora, key=lambda r: r["samples_per_s"], default=None)
    checkpointed = {r["batch"]: r for r in fitted if r["case"] == "lora_checkpointing"}
    capped = [r for r in step_rows if "memory_cap_gib" in r and "samples_per_s" in r]
    loader_rows = [r for r in result("loader").get("rows", []) if r.get("case", "").startswith("loader_to_gpu")]
    loader_rows = loader_rows or [r for r in result("loader").get("rows", []) if r.get("case", "").startswith("loader_workers")]
    feed = loader_rows[0]["samples_per_s"] if loader_rows else None
    consume = checkpointed.get(256, best or {}).get("samples_per_s") if (checkpointed or best) else None
    tests = result("gpu_tests")
    return {
        "targets": TARGETS,
        "measured": {
            "bf16_matmul_tflops": result("env").get("bf16_matmul_tflops"),
            "gpu_tests": {k: tests.get(k) for k in ("passed", "failures", "errors", "skipped")} if tests else None,
            "lora_best_batch": best and best["batch"],
            "lora_bf16_mfu_at_best_batch": best and best.get("mfu"),
            "lora_samples_per_s_at_best_batch": best and best["samples_per_s"],
            "lora_checkpointing_batch256_peak_gib": checkpointed.get(256, {}).get("peak_mem_gib"),
            "largest_checkpointing_batch_under_16_gib": max((r["batch"] for r in capped), default=None),
            "loader_samples_per_s": feed,
            # data.decode = "device" (JPEG bytes from the workers, nvJPEG + crop/resize on the GPU).
            "loader_device_decode_samples_per_s": next(
                (r.get("samples_per_s") for r in result("loader").get("rows", [])
                 if r.get("case", "").startswith("loader_device_decode_to_gpu")), None),
            # > 1: the loader outruns the step it feeds; the wait the trainer measured is below.
            "loader_over_step_consumption": round(feed / consume, 2) if feed and consume else None,
            # The wait a loader this fast would leave a step consuming this fast: 1 - feed / consumption.
            "loader_predicted_wait_fraction": round(max(0.0, 1 - feed / consume), 3) if feed and consume else None,
            "train_data_wait_fraction": result("train").get("data_wait_fraction"),
            "train_data_wait_fraction_median": result("train").get("data_wait_fraction_median"),
            "train_samples_per_s": result("train").get("samples_per_s"),
            "resume_max_relative_loss_difference": result("train").get("resume_max_relative_loss_difference"),
        },
        "stages": {name: outcome["status"] for name, outcome in stages.items()},
    }


if __name__ == "__main__":
    sys.exit(main())
