"""Checkpoints: RUN/checkpoints/step-0000100/ holding

    adapter_config.json, adapter_model.safetensors   LoRA adapters in peft's format
    alpha_embedding.safetensors                      the alpha patch conv (object_guided:
                                                     object_guided.safetensors, its paths and head)
    train_state.pt                                   optimiser, scheduler, scaler, logit scale,
                                                     step, samples seen, RNG states, loader
                                                     position, the resolved config

Each is written to a temporary directory, flushed to disk and renamed when complete, so a crash
(even kill -9 or a power cut) never leaves a checkpoint that looks finished; only the newest
`keep_last` are kept. train_state.pt holds plain types and tensors only and is read with
`weights_only=True`: loading a checkpoint never runs code from it.
"""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fcdata.errors import UserError
from fcdata.loader import LoaderPosition
from fctrain.model import ADAPTER_CONFIG, ADAPTER_WEIGHTS, ALPHA_WEIGHTS, RGBAClip, load_adapters, save_adapters
from fctrain.object_guided import GUIDE_WEIGHTS

STATE_FILE = "train_state.pt"
PREFIX = "step-"


@dataclass
class TrainState:
    step: int = 0  # optimiser steps taken
    samples_seen: int = 0  # region views trained on, over all ranks
    nonfinite_steps: int = 0  # optimiser steps skipped for a non-finite loss (once each, whatever the micro-batches)
    position: LoaderPosition = field(default_factory=LoaderPosition)  # this rank's data stream

    def state_dict(self) -> dict:
        return {
            "step": self.step, "samples_seen": self.samples_seen, "nonfinite_steps": self.nonfinite_steps,
            "position": self.position.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.step, self.samples_seen = state["step"], state["samples_seen"]
        self.nonfinite_steps = state["nonfinite_steps"]
        self.position.load_state_dict(state["position"])


def rng_state() -> dict:
    name, keys, position, has_gauss, gauss = np.random.get_state()
    numpy_state = (name, keys.tolist(), position, has_gauss, gauss)  # plain types: weights_only loads it
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys, np.uint32), position, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save_checkpoint(
    run_dir: Path, model: RGBAClip, optimizer, scheduler, scaler, state: TrainState, config: dict,
    keep_last: int, positions: list[dict] | None = None,
) -> Path:
    """Write a checkpoint for `state.step` and prune old ones; returns its directory.

    `positions` are the loader positions of every rank (rank 0 writes; see train.py)."""
    folder = checkpoint_dir(run_dir)
    final = folder / f"{PREFIX}{state.step:07d}"
    temporary = folder / f".{final.name}.tmp{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    save_adapters(model, temporary)
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "logit_scale": model.logit_scale.detach().cpu(),
            "train": state.state_dict(),
            "positions": positions or [state.position.state_dict()],
            "rng": rng_state(),
            "config": config,
        },
        temporary / STATE_FILE,
    )
    _flush(temporary)
    old = None
    if final.exists():  # a directory cannot be renamed over a non-empty one: move it aside first
        old = folder / f".{final.name}.old{os.getpid()}"
        os.replace(final, old)
    os.replace(temporary, final)
    _flush(folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    for old in sorted(folder.glob(f"{PREFIX}*"))[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _flush(directory: Path) -> None:
    """fsync the files of `directory` and the directory itself (its entries)."""
    for path in [*directory.iterdir(), directory]:
        if path.is_dir() and path != directory:
            continue
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


CHECKPOINT_FILES = (STATE_FILE, ADAPTER_CONFIG, ADAPTER_WEIGHTS)
MASK_FILES = (ALPHA_WEIGHTS, GUIDE_WEIGHTS)  # one of them, by model.architecture


def is_checkpoint(path: Path) -> bool:
    return all((path / name).is_file() for name in CHECKPOINT_FILES) and any((path / name).is_file() for name in MASK_FILES)


def find_checkpoint(run_dir: Path, resume: str) -> Path:
    """The checkpoint `resume` names: "latest" (the newest complete one in the run) or a
    checkpoint directory."""
    if resume == "latest":
        candidates = [p for p in sorted(checkpoint_dir(run_dir).glob(f"{PREFIX}*")) if is_checkpoint(p)]
        if not candidates:
            raise UserError(f"--resume latest: no checkpoint in {checkpoint_dir(run_dir)}")
        return candidates[-1]
    path = Path(resume)
    if not is_checkpoint(path):
        missing = next((name for name in CHECKPOINT_FILES if not (path / name).is_file()), " or ".join(MASK_FILES))
        raise UserError(f"--resume {resume}: not a checkpoint directory (no {missing})")
    return path


def read_state(path: Path) -> dict:
    """The train_state.pt of checkpoint `path`, loaded without running code from it."""
    try:
        return torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a damaged or foreign file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path / STATE_FILE}: not a checkpoint this version can read ({first[:200]})") from None


def load_checkpoint(
    path: Path, model: RGBAClip, optimizer, scheduler, scaler, state: TrainState, rank: int
) -> dict:
    """Restore everything saved by save_checkpoint into the given objects; returns the saved config."""
    saved = read_state(path)
    load_adapters(model, path)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    scaler.load_state_dict(saved["scaler"])
    with torch.no_grad():
        model.logit_scale.copy_(saved["logit_scale"])
    state.load_state_dict(saved["train"])
    positions = saved["positions"]
    if rank >= len(positions):
        raise UserError(f"{path} was written by {len(positions)} ranks; resume with the same number of processes")
    state.position.load_state_dict(positions[rank])
    set_rng_state(saved["rng"])
    return saved["config"]


def load_trained(run_dir: Path, checkpoint: str = "latest", device: str | torch.device = "cpu"):
    """(model in eval mode, tokenizer, TrainConfig) of a training run: its base model (or tiny
    model), with the adapters, alpha conv and logit scale of `checkpoint` ("latest" or a folder)."""
    import dataclasses

    from fctrain.config import load_config
    from fctrain.model import build_model

    run_dir = Path(run_dir)
    if not (run_dir / "config.toml").is_file():
        raise UserError(f"{run_dir}: not a training run (no config.toml)")
    config = load_config(run_dir / "config.toml")
    path = find_checkpoint(run_dir, checkpoint)
    model_config = dataclasses.replace(config.model, compile=False, gradient_checkpointing=False)
    model, tokenizer = build_model(model_config, config.lora, run_dir / "tiny-model", seed=config.run.seed)
    load_adapters(model, path)
    saved = read_state(path)
    with torch.no_grad():
        model.logit_scale.copy_(saved["logit_scale"])
    return model.to(device).eval(), tokenizer, config
