import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from fcdata.errors import UserError
from fctrain import train as train_module
from fctrain.checkpoint import STATE_FILE
from fctrain.config import load_config
from fctrain.train import train


@pytest.fixture(scope="module")
def shard_dir(make_shards):
    """Train and val shards of a small generated dataset."""
    return make_shards(images=60, seed=4, shard_samples=16, val_fraction=0.15)


def config_for(shard_dir, out_dir, *overrides):
    base = [
        f'data.shards="{shard_dir}"', f'run.out_dir="{out_dir}"', "data.batch_size=16", "data.workers=0",
        "data.shuffle_buffer=20", "model.image_size=32", "run.log_every=1", "run.val_every=0",
        "optim.warmup_steps=2", "optim.lr=2e-3", "run.steps=6", "checkpoint.every_steps=3",
        "model.tiny_pretrain_steps=10",  # these tests need a model, not a good one
    ]
    return load_config(None, base + list(overrides))


def losses(run_dir) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {row["step"]: row["loss"] for row in rows if "loss" in row}


@pytest.mark.slow
def test_loss_decreases_on_generated_regions(shard_dir, tmp_path):
    """A few dozen LoRA steps on generated scenes (a pretrained tiny model: a random frozen text tower
    gives nothing to align with) bring the contrastive loss clearly down."""
    result = train(config_for(
        shard_dir, tmp_path / "run", "run.steps=40", "checkpoint.every_steps=40", "model.tiny_pretrain_steps=300"
    ))
    values = list(losses(result.run_dir).values())
    assert sum(values[-8:]) / 8 < sum(values[:8]) / 8 - 0.3


@pytest.fixture(scope="module")
def whole_run(shard_dir, tmp_path_factory):
    """A 6-step run with checkpoints at steps 3 and 6, and its losses."""
    whole = train(config_for(shard_dir, tmp_path_factory.mktemp("whole") / "run", "model.text_cache=false"))
    return whole.run_dir, losses(whole.run_dir)


def resumed_from_step_3(shard_dir, whole_run, resumed_dir, edit_checkpoint=lambda path: None, overrides=()) -> dict[int, float]:
    """The losses of the whole run resumed from its step-3 checkpoint (edited first if asked;
    `overrides`: the settings the whole run had beyond config_for's)."""
    shutil.copytree(whole_run[0], resumed_dir)
    shutil.rmtree(resumed_dir / "checkpoints" / "step-0000006")
    (resumed_dir / "metrics.jsonl").unlink()
    edit_checkpoint(resumed_dir / "checkpoints" / "step-0000003")
    train(config_for(shard_dir, resumed_dir, "model.text_cache=false", *overrides, 'checkpoint.resume="latest"'))
    return losses(resumed_dir)


def test_resume_continues_with_the_same_losses(shard_dir, whole_run, tmp_path):
    """Resuming from the step-3 checkpoint reproduces steps 4-6 of the uninterrupted run."""
    reference = whole_run[1]
    again = resumed_from_step_3(shard_dir, whole_run, tmp_path / "resumed")
    assert sorted(again) == [4, 5, 6]
    for step in (4, 5, 6):  # metrics.jsonl rounds losses to 5 decimals: equal to that last digit
        assert again[step] == pytest.approx(reference[step], rel=0, abs=2e-5)


def test_resume_with_relation_views_continues_with_the_same_losses(shard_dir, tmp_path):
    """The same with relation views and their hard negatives in the batches."""
    relations = "data.relation_ratio=0.5"
    whole = train(config_for(shard_dir, tmp_path / "whole", "model.text_cache=false", relations))
    reference = losses(whole.run_dir)
    again = resumed_from_step_3(shard_dir, (whole.run_dir, reference), tmp_path / "resumed", overrides=(relations,))
    assert sorted(again) == [4, 5, 6]
    for step in (4, 5, 6):
        assert again[step] == pytest.approx(reference[step], rel=0, abs=2e-5)


def as_format_1(path) -> None:
    """Rewrite a checkpoint's train_state.pt as the code before the checkpoint manager wrote it."""
    new = torch.load(path / STATE_FILE, weights_only=True)
    torch.save({
        "optimizer": new["optimizer"], "scheduler": new["scheduler"], "scaler": new["scaler"],
        "logit_scale": new["model"]["logit_scale"], "train": {**new["train"], "position": new["data"][0]},
        "positions": new["data"], "rng": new["rng"], "config": new["config"],
    }, path / STATE_FILE)


def test_a_checkpoint_written_before_the_manager_resumes(shard_dir, whole_run, tmp_path):
    """A format-1 train_state.pt (no "format" key, logit scale at the top, "positions" beside rank
    0's position inside "train"): resuming from it reproduces steps 4-6 of the uninterrupted run."""
    reference = whole_run[1]
    again = resumed_from_step_3(shard_dir, whole_run, tmp_path / "resumed", as_format_1)
    assert sorted(again) == [4, 5, 6]
    for step in (4, 5, 6):
        assert again[step] == pytest.approx(reference[step], rel=0, abs=2e-5)


def test_checkpoints_hold_adapters_state_and_config_and_are_pruned(shard_dir, tmp_path):
    """Checkpoints are complete (peft adapters, alpha conv, state, config) and only the last k stay."""
    result = train(config_for(shard_dir, tmp_path / "run", "checkpoint.every_steps=2", "checkpoint.keep_last=2"))
    names = sorted(p.name for p in (result.run_dir / "checkpoints").iterdir())
    assert names == ["step-0000004", "step-0000006"]
    files = {p.name for p in result.checkpoint.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "alpha_embedding.safetensors", STATE_FILE} <= files
    state = torch.load(result.checkpoint / STATE_FILE, weights_only=False)
    assert state["train"]["step"] == 6 and state["config"]["lora"]["rank"] == 16
    assert (result.run_dir / "config.toml").read_text().startswith("[run]")


def test_an_exactly_once_stream_that_ends_early_moves_to_the_next_epoch(shard_dir, tmp_path, monkeypatch):
    """data.resample=false and fewer batches than the epoch expects (here sizes.json claims twice
    the samples): the next epoch starts instead of the loop spinning on an empty stream."""
    shards = tmp_path / "shards"
    shutil.copytree(shard_dir, shards)
    sizes = json.loads((shards / "sizes.json").read_text())
    (shards / "sizes.json").write_text(json.dumps({name: 2 * count for name, count in sizes.items()}))
    real, streams = train_module.make_loader, []

    def counted(stream):
        streams.append(stream)
        if len(streams) > 20:  # 12 steps need 2-3 epochs; more streams means the loop spins
            raise RuntimeError("the epoch never ended")
        return real(stream)

    monkeypatch.setattr(train_module, "make_loader", counted)
    result = train(config_for(shards, tmp_path / "run", "data.resample=false", "run.steps=12", "checkpoint.every_steps=12"))
    state = torch.load(result.checkpoint / STATE_FILE, weights_only=False)
    assert result.step == 12 and state["data"][0]["epoch"] >= 1


def test_exactly_once_streams_are_refused_under_torchrun(shard_dir, tmp_path, monkeypatch):
    """Ranks' exactly-once streams end at different batches: refused before any process group."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="resample"):
        train(config_for(shard_dir, tmp_path / "run", "data.resample=false"))


def test_nonfinite_losses_are_skipped_counted_and_stop_the_run(shard_dir, tmp_path, monkeypatch):
    """An injected NaN loss skips that step (counted in the metrics); too many stop the run with a clear error."""
    real = train_module.region_contrastive_loss
    calls = {"n": 0}

    def sometimes_nan(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] in (2, 4) else loss

    monkeypatch.setattr(train_module, "region_contrastive_loss", sometimes_nan)
    result = train(config_for(shard_dir, tmp_path / "run"))
    assert result.metrics["nonfinite_steps"] == 2
    assert all(value == value for value in losses(result.run_dir).values())  # logged losses are finite
    calls["n"] = 0
    with pytest.raises(UserError, match="non-finite"):
        train(config_for(shard_dir, tmp_path / "run2", "run.max_nonfinite=1"))


def test_nonfinite_steps_count_optimiser_steps_not_micro_batches(shard_dir, tmp_path, monkeypatch):
    """With two micro-batches per step, NaN losses in both micro-batches of step 1 and in one of
    step 3 skip two optimiser steps: nonfinite_steps is 2, and the skipped steps leave the weights."""
    real = train_module.region_contrastive_loss
    calls = {"n": 0}

    def sometimes_nan(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] in (1, 2, 6) else loss

    monkeypatch.setattr(train_module, "region_contrastive_loss", sometimes_nan)
    result = train(config_for(
        shard_dir, tmp_path / "run", "optim.grad_accum=2", "run.steps=4", "checkpoint.every_steps=1", "checkpoint.keep_last=4"
    ))
    assert calls["n"] == 8 and result.metrics["nonfinite_steps"] == 2
    alpha = {step: load_file(result.run_dir / "checkpoints" / f"step-{step:07d}" / "alpha_embedding.safetensors")
             for step in (1, 2, 3, 4)}
    weight = next(iter(alpha[1]))
    assert not alpha[1][weight].any()  # step 1 was skipped: the alpha conv is still its zero init
    assert alpha[2][weight].any() and torch.equal(alpha[2][weight], alpha[3][weight])  # step 3 was skipped
    assert not torch.equal(alpha[3][weight], alpha[4][weight])  # step 4 was not


def test_only_lora_and_alpha_weights_change(shard_dir, tmp_path):
    """Training moves the LoRA and alpha-conv weights and nothing else of the CLIP model."""
    from fctrain.model import build_model

    config = config_for(shard_dir, tmp_path / "run")
    result = train(config)
    trained, _ = build_model(config.model, config.lora, result.run_dir / "tiny-model", seed=config.run.seed)
    fresh, _ = build_model(config.model, config.lora, result.run_dir / "tiny-model", seed=config.run.seed)
    from fctrain.model import load_adapters

    load_adapters(trained, result.checkpoint)
    changed = {name for (name, a), (_, b) in zip(trained.named_parameters(), fresh.named_parameters()) if not torch.equal(a, b)}
    assert changed and all("lora_" in name or "alpha_embedding" in name for name in changed)
    assert any("alpha_embedding" in name for name in changed)


def test_text_lora_trains_the_text_adapters_without_the_cache(shard_dir, tmp_path, monkeypatch):
    """With lora.text_targets the text LoRA weights move too (the caption cache, which would hold
    stale embeddings of a changing tower, is not used), and nothing but LoRA and the alpha conv."""
    from fctrain.model import build_model, load_adapters

    def no_cache(*args, **kwargs):
        raise AssertionError("the text cache was used while the text tower trains")

    monkeypatch.setattr(train_module.TextEmbeddingCache, "embed_tokens", no_cache)
    config = config_for(shard_dir, tmp_path / "run", 'lora.text_targets=["q_proj", "v_proj"]', "data.relation_ratio=0.5")
    result = train(config)
    trained, _ = build_model(config.model, config.lora, result.run_dir / "tiny-model", seed=config.run.seed)
    fresh, _ = build_model(config.model, config.lora, result.run_dir / "tiny-model", seed=config.run.seed)
    load_adapters(trained, result.checkpoint)
    changed = {name for (name, a), (_, b) in zip(trained.named_parameters(), fresh.named_parameters()) if not torch.equal(a, b)}
    assert all("lora_" in name or "alpha_embedding" in name for name in changed)
    assert any(".text_model." in name for name in changed) and any(".vision_model." in name for name in changed)


def test_config_layers_and_unknown_settings(tmp_path):
    """Defaults < TOML file < --set overrides; unknown keys and sections are one-line errors."""
    path = tmp_path / "train.toml"
    path.write_text('[optim]\nlr = 3e-4\n[lora]\nrank = 8\n')
    config = load_config(path, ["lora.rank=4", "model.gradient_checkpointing=true"])
    assert config.optim.lr == 3e-4 and config.lora.rank == 4 and config.model.gradient_checkpointing
    assert config.optim.warmup_steps == 100  # a default
    with pytest.raises(UserError, match="unknown setting optim.learning_rate"):
        load_config(None, ["optim.learning_rate=1"])
    with pytest.raises(UserError, match="unknown config section"):
        load_config(None, ["optimiser.lr=1"])
    with pytest.raises(UserError, match="multiple of data.regions_per_image"):
        load_config(None, ["data.batch_size=7"])


def test_run_seed_seeds_the_data_stream_unless_data_seed_is_given(tmp_path):
    """run.seed is the whole run's seed (the data stream included); data.seed, given, overrides it for
    the data alone; the saved config reads back to the same seeds."""
    from fctrain.config import to_toml

    assert load_config(None, ["run.seed=7"]).data.seed == 7
    split = load_config(None, ["run.seed=7", "data.seed=3"])
    assert (split.run.seed, split.data.seed) == (7, 3)
    path = tmp_path / "config.toml"
    path.write_text(to_toml(load_config(None, ["run.seed=7"])))
    again = load_config(path, ["run.seed=9"])  # a resolved config names data.seed: it stays
    assert (again.run.seed, again.data.seed) == (9, 7)


def _fc_train(shard_dir, out_dir, *extra) -> list[str]:
    return [
        sys.executable, "-m", "fc", "train", "--shards", str(shard_dir), "--out", str(out_dir),
        "--batch-size", "16", "--set", "data.workers=0", "--set", "model.image_size=32",
        "--set", "run.log_every=1", "--set", "run.val_every=0", "--set", "model.tiny_pretrain_steps=10", *extra,
    ]


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_before_exit(shard_dir, tmp_path):
    """SIGTERM mid-run ends the run after the current step with a checkpoint of that step."""
    out = tmp_path / "run"
    process = subprocess.Popen(_fc_train(shard_dir, out, "--steps", "100000"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 128 + signal.SIGTERM, process.stderr.read().decode()[-2000:]
    checkpoints = sorted((out / "checkpoints").iterdir())
    step = json.loads(metrics.read_text().splitlines()[-1])["step"]
    assert checkpoints[-1].name == f"step-{step:07d}" and 3 <= step < 100000
    assert f"stopped by SIGTERM at step {step}; checkpoint {checkpoints[-1]}" in process.stderr.read().decode()


# --standalone: the rendezvous binds a free port itself, so overlapping runs cannot collide (a
# fixed --master_port did) and there is no window between picking a port and binding it.
TORCHRUN_TWO_RANKS = ("--standalone", "--nproc_per_node", "2")


@pytest.mark.slow
def test_two_process_ddp_on_cpu(shard_dir, tmp_path):
    """torchrun with two gloo processes trains, logs and checkpoints both ranks' data positions."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", *TORCHRUN_TWO_RANKS, "-m", "fc",
               *_fc_train(shard_dir, out, "--steps", "4")[3:]]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    state = torch.load(out / "checkpoints" / "step-0000004" / STATE_FILE, weights_only=False)
    assert len(state["data"]) == 2
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 4 and rows[-1]["samples_seen"] == 4 * 16 * 2


def _descendants(pid: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(entry))
    return children + [grandchild for child in children for grandchild in _descendants(child)]


def _rank_of(pid: int) -> int | None:
    try:
        variables = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    except OSError:
        return None
    return next((int(v[5:]) for v in variables if v.startswith(b"RANK=")), None)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the rank's process through /proc")
def test_sigterm_to_one_ddp_rank_stops_both_after_the_same_step(shard_dir, tmp_path):
    """SIGTERM to rank 1 alone: both ranks leave after the same step, with one checkpoint of both
    positions, instead of one rank waiting in a collective the other never joins."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", *TORCHRUN_TWO_RANKS, "-m", "fc",
               *_fc_train(shard_dir, out, "--steps", "100000")[3:]]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ, OMP_NUM_THREADS="1"),
        start_new_session=True,  # a hung run is killed with its ranks below
    )
    try:
        metrics = out / "metrics.jsonl"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
            time.sleep(0.2)
        rank_one = [pid for pid in _descendants(process.pid) if _rank_of(pid) == 1]
        assert rank_one, "rank 1's process was not found"
        os.kill(rank_one[0], signal.SIGTERM)
        # Both ranks report the stop and exit 143; torchrun then reports its workers' failure.
        assert process.wait(timeout=120) != 0
        assert process.stderr.read().decode().count("stopped by SIGTERM at step") == 2
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    step = json.loads(metrics.read_text().splitlines()[-1])["step"]
    last = sorted((out / "checkpoints").iterdir())[-1]
    assert last.name == f"step-{step:07d}" and 3 <= step < 100000
    assert len(torch.load(last / STATE_FILE, weights_only=False)["data"]) == 2



@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigterm_while_the_tiny_model_is_built_leaves_no_temporaries(shard_dir, tmp_path):
    """SIGTERM during the tiny model's pretraining: exit 143 with one line, and the half-built
    model's temporary folder is removed (no `.tiny-model.tmp-*` left behind)."""
    out = tmp_path / "run"
    command = _fc_train(shard_dir, out, "--steps", "3", "--set", "model.tiny_pretrain_steps=100000")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not list(out.glob(".tiny-model.tmp-*")):
        time.sleep(0.1)
    assert list(out.glob(".tiny-model.tmp-*")), "the tiny model was never started"
    time.sleep(1)  # into the pretraining steps
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 128 + signal.SIGTERM
    stderr = process.stderr.read().decode()
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1] == "error: interrupted by SIGTERM"
    assert not list(out.glob(".tiny-model.*")) and not (out / "tiny-model").exists()


@pytest.mark.timeout(600)
def test_kill_9_during_a_checkpoint_write_leaves_latest_loadable(shard_dir, tmp_path):
    """A real kill -9 in the middle of writing a checkpoint's state: `latest` is still the previous,
    complete checkpoint, it loads, and the next run removes the dead writer's temporary."""
    from fctrain.checkpoint import find_checkpoint, load_trained
    from fctrain.rundir import prepare_run_dir

    config = config_for(shard_dir, tmp_path / "run", "run.steps=2", "checkpoint.every_steps=2")
    run = train(config).run_dir
    script = f"""
import os, signal, torch
from fctrain import checkpoint
from fctrain.checkpoint import CheckpointManager, RankPositions, RngState, TrainedWeights, TrainState, load_trained
from fctrain.train import build_optimizer, make_scaler, Runtime

model, _, config = load_trained({str(run)!r})
optimizer = build_optimizer(model, config.optim, torch.device("cpu"))
scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
real_save = torch.save

def dies_half_way(state, path):
    real_save(state, path)
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    os.kill(os.getpid(), signal.SIGKILL)

checkpoint.torch.save = dies_half_way
state = TrainState(step=4)
states = {{"model": TrainedWeights(model), "optimizer": optimizer, "scheduler": scheduler,
          "scaler": make_scaler(Runtime(torch.device("cpu"))), "train": state,
          "data": RankPositions(state.position), "rng": RngState()}}
CheckpointManager({str(run)!r}, states, keep_last=3, config=config).save(state.step)
"""
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    leftovers = list((run / "checkpoints").glob(".step-0000004.tmp*"))
    assert leftovers and (leftovers[0] / STATE_FILE).stat().st_size > 0  # it died mid-write
    assert find_checkpoint(run, "latest").name == "step-0000002"
    model, _, _ = load_trained(run)
    assert model is not None
    prepare_run_dir(run, load_config(run / "config.toml", ['checkpoint.resume="latest"']))
    assert not list((run / "checkpoints").glob(".step-*"))


def test_config_values_are_type_checked_naming_the_key(tmp_path):
    """A wrongly typed value (from --set or TOML) is a UserError naming the key; an int is a float."""
    with pytest.raises(UserError, match="optim.lr must be a number, got 'abc'"):
        load_config(None, ["optim.lr=abc"])
    with pytest.raises(UserError, match="run.steps must be an integer"):
        load_config(None, ["run.steps=2.5"])
    with pytest.raises(UserError, match="optim.betas must be a list of 2 values"):
        load_config(None, ["optim.betas=[0.9]"])
    with pytest.raises(UserError, match=r"lora.targets\[0\] must be a string"):
        load_config(None, ["lora.targets=[1]"])
    path = tmp_path / "train.toml"
    path.write_text('[model]\ncompile = "yes"\n')
    with pytest.raises(UserError, match="model.compile must be true or false"):
        load_config(path)
    config = load_config(None, ["optim.lr=1", "optim.betas=[1, 0.5]"])
    assert isinstance(config.optim.lr, float) and config.optim.betas == (1.0, 0.5)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ctrl_c_to_the_process_group_saves_a_checkpoint_without_tracebacks(shard_dir, tmp_path):
    """Ctrl-C reaches the trainer and its loader workers at once: the run still saves a
    checkpoint after the current step and exits 130, with no traceback from any process."""
    out = tmp_path / "run"
    command = _fc_train(shard_dir, out, "--steps", "100000")
    command[command.index("data.workers=0")] = "data.workers=2"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        metrics = out / "metrics.jsonl"
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
            time.sleep(0.1)
        os.killpg(process.pid, signal.SIGINT)
        code = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    stderr = process.stderr.read().decode()
    assert code == 128 + signal.SIGINT and "Traceback" not in stderr, stderr[-3000:]
    step = json.loads(metrics.read_text().splitlines()[-1])["step"]
    assert sorted((out / "checkpoints").iterdir())[-1].name == f"step-{step:07d}"


@pytest.mark.timeout(600)
def test_skipped_samples_are_totalled_by_reason_in_the_result(shard_faults, tmp_path):
    """Training through a shard of random-bytes images and an empty one: it trains on the rest,
    and the run's result totals the skips by reason (what `fc train` prints at the end)."""
    shards = ",".join([shard_faults.good, shard_faults.random_members(every=2), shard_faults.empty_tar()])
    result = train(config_for(shards, tmp_path / "run", "run.steps=4", "checkpoint.every_steps=4"))
    assert result.step == 4
    assert result.skipped.get("bad_image", 0) >= 1 and result.skipped.get("empty_shard", 0) >= 1
    assert set(result.skipped) <= {"bad_image", "empty_shard"}
