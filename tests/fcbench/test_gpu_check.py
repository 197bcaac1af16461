import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fcbench import gpu_check, step

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_cpu_mode_runs_every_stage_into_one_report(tmp_path):
    """benchmarks/gpu_check.sh --cpu runs all five stages at tiny sizes and writes one JSON with
    each stage's result, plus a log per stage: the GPU run's script cannot rot unseen."""
    out = tmp_path / "check"
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(out), "--cpu"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((out / gpu_check.RESULT).read_text())
    stages = report["stages"]
    assert list(stages) == list(gpu_check.BUDGETS_S) and report["mode"] == "cpu"
    assert all(s["status"] == "ok" and (out / s["log"]).is_file() for s in stages.values())
    assert stages["env"]["result"]["bf16_matmul_tflops"] > 0
    assert stages["gpu_tests"]["result"]["skipped"] > 0 and stages["gpu_tests"]["result"]["failures"] == []
    rows = stages["step"]["result"]["rows"]
    assert {(r["case"], r["batch"]) for r in rows} == {(c, b) for c in step.SWEEP_CASES for b in gpu_check.CPU.batches}
    assert any(r["case"].startswith("loader_workers") for r in stages["loader"]["result"]["rows"])
    trained = stages["train"]["result"]
    assert trained["steps"] == gpu_check.CPU.train_steps and trained["resumed_steps_compared"]
    assert trained["resume_max_relative_loss_difference"] <= 1e-6  # CPU resume is exact (test_train asserts it)
    assert report["summary"]["measured"]["lora_best_batch"] in gpu_check.CPU.batches


def test_a_stage_over_its_budget_is_stopped_and_reported(tmp_path):
    """A stage that overruns its budget is killed, and the report says so instead of hanging."""
    code = gpu_check.check(tmp_path, cpu=True, stages=["env"], budgets={"env": 0.2})
    report = json.loads((tmp_path / gpu_check.RESULT).read_text())
    outcome = report["stages"]["env"]
    assert code == 1 and outcome["status"] == "timeout" and "budget" in outcome["error"]
    assert outcome["seconds"] < 0.2 + 11  # the budget plus SIGTERM's and SIGKILL's grace
    assert report["summary"]["stages"] == {"env": "timeout"}


def test_unknown_stage_is_refused_in_one_line(tmp_path):
    """A misspelt stage name stops before anything runs: one line naming the stages, exit code 1."""
    done = subprocess.run([sys.executable, "-m", "fc", "bench", "gpu-check", str(tmp_path / "out"), "--stages", "enviroment"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "env, gpu_tests" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_summary_reads_the_cuda_only_rows():
    """The summary's GPU figures (MFU at LoRA's best batch, checkpointing at 256, the 16-GB cap,
    the loader against the step) come from the rows only a GPU run writes."""
    rows = [
        {"case": "lora", "dtype": "bfloat16", "batch": 256, "samples_per_s": 3000.0, "mfu": 0.41},
        {"case": "lora", "dtype": "bfloat16", "batch": 512, "samples_per_s": 3200.0, "mfu": 0.44},
        {"case": "lora", "dtype": "float16", "batch": 512, "samples_per_s": 3300.0, "mfu": 0.45},
        {"case": "lora_checkpointing", "dtype": "bfloat16", "batch": 256, "samples_per_s": 2400.0, "peak_mem_gib": 21.5},
        {"case": "lora_checkpointing", "dtype": "bfloat16", "batch": 128, "samples_per_s": 2300.0, "memory_cap_gib": 16.0},
        {"case": "lora_checkpointing", "dtype": "bfloat16", "batch": 256, "error": "out of memory", "memory_cap_gib": 16.0},
    ]
    stages = {
        "step": {"status": "ok", "result": {"rows": rows}},
        "loader": {"status": "ok", "result": {"rows": [
            {"case": "loader_to_gpu_workers_14", "samples_per_s": 4800.0},
            {"case": "loader_device_decode_to_gpu_workers_14", "samples_per_s": 9100.0},
        ]}},
        "train": {"status": "timeout"},
    }
    measured = gpu_check.summarise(stages)["measured"]
    assert measured["lora_best_batch"] == 512 and measured["lora_bf16_mfu_at_best_batch"] == 0.44
    assert measured["lora_checkpointing_batch256_peak_gib"] == 21.5
    assert measured["largest_checkpointing_batch_under_16_gib"] == 128
    assert measured["loader_over_step_consumption"] == 2.0 and measured["loader_predicted_wait_fraction"] == 0.0
    assert measured["loader_device_decode_samples_per_s"] == 9100.0
    assert measured["train_data_wait_fraction"] is None  # the train stage timed out: no number rather than a guess


def test_sweep_stops_each_case_at_the_first_batch_that_does_not_fit(monkeypatch):
    """A batch that runs out of GPU memory ends that case's sweep with an error row; the other
    cases still run. (The sweep's control flow alone: models, optimiser and the out-of-memory
    error are stand-ins, since CPU runs never meet one.)"""
    import fctrain.train

    def measure(case, model, optimizer, dtype, device, batch, *args):
        if batch >= 4 and case != "baseline_full_vision":
            raise torch.cuda.OutOfMemoryError("planted")
        return {"case": case, "dtype": "fp32", "batch": batch, "samples_per_s": 10.0 * batch}

    monkeypatch.setattr(step, "_measure", measure)
    monkeypatch.setattr(step, "_model", lambda case, *args: torch.nn.Linear(2, 2))
    monkeypatch.setattr(fctrain.train, "build_optimizer", lambda model, *args: torch.optim.SGD(model.parameters(), lr=0.1))
    rows = step.sweep(batches=(2, 4, 8), image_size=32, steps=1, device="cpu", arch="tiny", save=False)
    by_case = {case: [(r["batch"], "error" in r) for r in rows if r["case"] == case] for case in step.SWEEP_CASES}
    assert by_case["lora"] == [(2, False), (4, True)] == by_case["lora_checkpointing"]
    assert by_case["baseline_full_vision"] == [(2, False), (4, False), (8, False)]
