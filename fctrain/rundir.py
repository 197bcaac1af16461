"""One run folder holds one run: the checks that keep two runs from mixing in it.

A folder holds a run once it has metrics or a checkpoint. Training into it again is refused
unless it continues that run (`--resume`, with a config that differs only in how the run is
driven: RESUMABLE) or `overwrite` is given, which deletes what `fc train` wrote there (RUN_OUTPUTS)
and nothing else. A checkpoint is checked against the config it is resumed with, so `--resume
PATH` cannot load another run's weights under this run's settings.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from fcdata.errors import UserError
from fcdata.outputs import check_output_dir, remove_stale_temporaries
from fctrain.checkpoint import CHECKPOINTS_DIR, PREFIX, checkpoint_dir
from fctrain.config import TrainConfig, load_config

CONFIG_FILE = "config.toml"
METRICS_FILE = "metrics.jsonl"
TINY_MODEL = "tiny-model"
# Everything fc train (and fc eval, into the run folder by default) writes there.
RUN_OUTPUTS = (CONFIG_FILE, METRICS_FILE, CHECKPOINTS_DIR, TINY_MODEL, "eval.json", "eval-examples.png")

# Settings that may change when a run is resumed: where things are and how the run is driven.
# The rest (model, LoRA, loss, optimiser, data sampling, seeds) define the run.
RESUMABLE = frozenset({
    "run.out_dir", "run.steps", "run.val_shards", "run.val_every", "run.val_batches", "run.log_every",
    "run.max_nonfinite", "run.device", "data.shards", "checkpoint.every_steps", "checkpoint.keep_last",
    "checkpoint.resume", "model.gradient_checkpointing", "model.compile", "model.text_cache",
    "model.text_cache_entries",
})


def differences(old: dict, new: dict, ignore: frozenset[str] = RESUMABLE) -> list[str]:
    """`section.key: old -> new` for each setting that differs, outside `ignore`."""
    found = []
    for section in sorted(set(old) | set(new)):
        before, after = old.get(section, {}), new.get(section, {})
        for name in sorted(set(before) | set(after)):
            key = f"{section}.{name}"
            a, b = before.get(name), after.get(name)
            if isinstance(a, list):
                a = tuple(a)
            if isinstance(b, list):
                b = tuple(b)
            if key not in ignore and a != b:
                found.append(f"{key}: {a!r} -> {b!r}")
    return found


def holds_run(run_dir: Path) -> bool:
    return (run_dir / METRICS_FILE).exists() or any(checkpoint_dir(run_dir).glob(f"{PREFIX}*"))


def prepare_run_dir(run_dir: Path, config: TrainConfig, overwrite: bool = False) -> None:
    """Check (rank 0, before any work) that `run_dir` may take this run; clear it if `overwrite`."""
    check_output_dir(run_dir, "--out")
    remove_stale_temporaries(run_dir, f".{TINY_MODEL}.*")
    remove_stale_temporaries(checkpoint_dir(run_dir), f".{PREFIX}*")
    saved_path = run_dir / CONFIG_FILE
    if config.checkpoint.resume:
        if saved_path.exists():
            changed = differences(load_config(saved_path).to_dict(), config.to_dict())
            if changed:
                raise UserError(
                    f"{run_dir} was trained with other settings ({changed[0]}"
                    + (f", and {len(changed) - 1} more" if len(changed) > 1 else "")
                    + "); resume with the run's own config (--config "
                    + f"{saved_path}) or train into a new --out"
                )
        return
    if overwrite:
        for name in RUN_OUTPUTS:
            path = run_dir / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
        return
    if holds_run(run_dir):
        raise UserError(
            f"{run_dir} already holds a training run; continue it with --resume latest, "
            "start it over with --overwrite, or train into a new --out"
        )
    if saved_path.exists():  # an earlier start that stopped before its first step
        changed = differences(load_config(saved_path).to_dict(), config.to_dict(), frozenset({"checkpoint.resume"}))
        if changed:
            raise UserError(
                f"{run_dir} holds the start of a run with other settings ({changed[0]}); "
                "start over with --overwrite or train into a new --out"
            )


def check_checkpoint_config(path: Path, saved: dict, config: TrainConfig) -> None:
    """A checkpoint's own config must define the same run as the config it is resumed with.

    A setting added after the checkpoint was written is absent from it; the run had the setting's
    default, since new settings default to the earlier behaviour (model.architecture, say)."""
    defaults = TrainConfig().to_dict()
    saved = {section: {**defaults.get(section, {}), **values} for section, values in {**defaults, **saved}.items()}
    changed = differences(saved, config.to_dict())
    if changed:
        raise UserError(
            f"checkpoint {path} belongs to a run with other settings ({changed[0]}); "
            "resume it with its run's config, or give a checkpoint of this run"
        )
