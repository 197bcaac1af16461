"""Checkpoints: a manager over the run's stateful objects, and the only code that knows their layout.

A run builds one `CheckpointManager` over `states={"model": ..., "optimizer": ..., ...}`: anything
with `state_dict()` / `load_state_dict()`, so a new stateful thing (an EMA, a second optimiser, a
sampler) is one more entry in that dict, not an edit to four signatures. The manager saves them
atomically, keeps the last k, finds the latest and, given the run's config, refuses to restore a
checkpoint of another run (fctrain.rundir.check_checkpoint_config).

Layout, RUN/checkpoints/step-0000100/:

    adapter_config.json, adapter_model.safetensors   LoRA adapters in peft's format (the "model"
    alpha_embedding.safetensors                      state's files; object_guided writes
                                                     object_guided.safetensors instead of the alpha conv)
    train_state.pt                                   {"format": 2, "config": the resolved config,
                                                     and every other state under its name: "model"
                                                     (logit scale), "optimizer", "scheduler",
                                                     "scaler", "train" (step, samples seen),
                                                     "data" (each rank's loader position), "rng"}

Format 1 (written before the manager, no "format" key) kept the logit scale at the top level, the
data positions under "positions" and rank 0's position again inside "train"; it is read as format 2.
Each checkpoint is written to a temporary folder, fsynced and renamed when complete, so a crash
(even kill -9 or a power cut) never leaves one that looks finished. train_state.pt holds plain
types and tensors only and is read with `weights_only=True`: loading never runs code from it.
"""

from __future__ import annotations

import random
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
import torch.distributed as dist

from fcdata.errors import UserError
from fcdata.loader import LoaderPosition
from fcdata.outputs import write_directory_atomically
from fctrain.model import ADAPTER_CONFIG, ADAPTER_WEIGHTS, ALPHA_WEIGHTS, RGBAClip, load_adapters, save_adapters
from fctrain.object_guided import GUIDE_WEIGHTS

if TYPE_CHECKING:
    from fctrain.config import TrainConfig

CHECKPOINTS_DIR = "checkpoints"  # in the run folder
STATE_FILE = "train_state.pt"
FORMAT = 2  # of train_state.pt; 1 = no "format" key (see the module docstring)
PREFIX = "step-"
_STEP_FOLDER = re.compile(rf"{PREFIX}(\d+)")
CHECKPOINT_FILES = (STATE_FILE, ADAPTER_CONFIG, ADAPTER_WEIGHTS)
MASK_FILES = (ALPHA_WEIGHTS, GUIDE_WEIGHTS)  # one of them, by model.architecture
_RESERVED = ("format", "config")  # keys of train_state.pt that are not states


class Stateful(Protocol):
    def state_dict(self): ...
    def load_state_dict(self, state) -> None: ...


# ----------------------------------------------------------------------------- the states of a run


@dataclass
class TrainState:
    step: int = 0  # optimiser steps taken
    samples_seen: int = 0  # region views trained on, over all ranks
    nonfinite_steps: int = 0  # optimiser steps skipped for a non-finite loss (once each, whatever the micro-batches)
    position: LoaderPosition = field(default_factory=LoaderPosition)  # this rank's data stream (saved as "data")

    def state_dict(self) -> dict:
        return {"step": self.step, "samples_seen": self.samples_seen, "nonfinite_steps": self.nonfinite_steps}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.samples_seen = state["step"], state["samples_seen"]
        self.nonfinite_steps = state["nonfinite_steps"]


class TrainedWeights:
    """The trained part of an RGBAClip: adapters and mask module as files beside train_state.pt
    (peft's format, so a checkpoint folder is also an adapter folder), the logit scale inside it."""

    def __init__(self, model: RGBAClip):
        self.model = model

    def save_files(self, directory: Path) -> None:
        save_adapters(self.model, directory)

    def load_files(self, directory: Path) -> None:
        load_adapters(self.model, directory)

    def state_dict(self) -> dict:
        return {"logit_scale": self.model.logit_scale.detach().cpu()}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.model.logit_scale.copy_(state["logit_scale"])


class RankPositions:
    """Every rank's data position. Saving gathers them (a collective: every rank saves together);
    restoring takes this rank's, and needs as many ranks as wrote them."""

    def __init__(self, position: LoaderPosition, rank: int = 0, world: int = 1):
        self.position, self.rank, self.world = position, rank, world

    def state_dict(self) -> list[dict]:
        mine = self.position.state_dict()
        if self.world == 1:
            return [mine]
        positions = [None] * self.world
        dist.all_gather_object(positions, mine)
        return positions

    def load_state_dict(self, positions: list[dict]) -> None:
        if self.rank >= len(positions):
            raise UserError(f"the checkpoint was written by {len(positions)} ranks; resume with the same number of processes")
        self.position.load_state_dict(positions[self.rank])


class RngState:
    """Python's, NumPy's, torch's and (where present) CUDA's random generators."""

    def state_dict(self) -> dict:
        name, keys, position, has_gauss, gauss = np.random.get_state()
        numpy_state = (name, keys.tolist(), position, has_gauss, gauss)  # plain types: weights_only loads it
        state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict) -> None:
        random.setstate(state["python"])
        name, keys, position, has_gauss, gauss = state["numpy"]
        np.random.set_state((name, np.asarray(keys, np.uint32), position, has_gauss, gauss))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- the manager


class CheckpointManager:
    """Saves and restores `states` as checkpoints of the run in `run_dir`.

    `save` is called by every rank (a state may gather across ranks); the `main` rank writes.
    `config`, if given, is written into each checkpoint and checked against on `restore`."""

    def __init__(
        self, run_dir: Path, states: Mapping[str, Stateful], keep_last: int = 3,
        config: TrainConfig | None = None, main: bool = True,
    ):
        reserved = set(states) & set(_RESERVED)
        if reserved:
            raise ValueError(f"state names {sorted(reserved)} are reserved in {STATE_FILE}")
        self.folder = checkpoint_dir(run_dir)
        self.states = dict(states)
        self.keep_last, self.config, self.main = keep_last, config, main
        self.saved_step: int | None = None  # the step of the last checkpoint this manager saved

    def save(self, step: int) -> Path:
        """Write the checkpoint of `step` (replacing one of that step) and prune old ones."""
        payload = {name: state.state_dict() for name, state in self.states.items()}
        final = self.folder / f"{PREFIX}{step:07d}"
        if self.main:
            with write_directory_atomically(final, durable=True) as temporary:
                for state in self.states.values():
                    if hasattr(state, "save_files"):
                        state.save_files(temporary)
                config = self.config.to_dict() if self.config is not None else {}
                torch.save({"format": FORMAT, "config": config, **payload}, temporary / STATE_FILE)
            for old in checkpoints(self.folder)[: -self.keep_last]:
                shutil.rmtree(old, ignore_errors=True)
        self.saved_step = step
        return final

    def latest(self) -> Path | None:
        found = checkpoints(self.folder)
        return found[-1] if found else None

    def restore(self, path: Path) -> dict:
        """Load checkpoint `path` into every state of this manager; returns what was saved."""
        saved = read_state(path)
        if self.config is not None:
            from fctrain.rundir import check_checkpoint_config  # here: fctrain.rundir imports this module

            check_checkpoint_config(path, saved["config"], self.config)
        missing = [name for name in self.states if name not in saved]
        if missing:
            raise UserError(f"checkpoint {path} holds no {missing[0]!r} state (it has {sorted(set(saved) - set(_RESERVED))})")
        for name, state in self.states.items():
            if hasattr(state, "load_files"):
                state.load_files(path)
            state.load_state_dict(saved[name])
        return saved


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIR


def is_checkpoint(path: Path) -> bool:
    return all((path / name).is_file() for name in CHECKPOINT_FILES) and any((path / name).is_file() for name in MASK_FILES)


def checkpoints(folder: Path) -> list[Path]:
    """The complete checkpoints in `folder`, oldest step first."""
    found = []
    for path in Path(folder).glob(f"{PREFIX}*"):
        match = _STEP_FOLDER.fullmatch(path.name)
        if match and is_checkpoint(path):
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def find_checkpoint(run_dir: Path, resume: str) -> Path:
    """The checkpoint `resume` names: "latest" (the newest complete one in the run) or a
    checkpoint directory."""
    if resume == "latest":
        found = checkpoints(checkpoint_dir(run_dir))
        if not found:
            raise UserError(f"--resume latest: no checkpoint in {checkpoint_dir(run_dir)}")
        return found[-1]
    path = Path(resume)
    if not is_checkpoint(path):
        missing = next((name for name in CHECKPOINT_FILES if not (path / name).is_file()), " or ".join(MASK_FILES))
        raise UserError(f"--resume {resume}: not a checkpoint directory (no {missing})")
    return path


def read_state(path: Path) -> dict:
    """The train_state.pt of checkpoint `path` in the current format, loaded without running code from it."""
    try:
        saved = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a damaged or foreign file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path / STATE_FILE}: not a checkpoint this version can read ({first[:200]})") from None
    version = saved.get("format", 1) if isinstance(saved, dict) else None
    if version == 1:
        return _from_format_1(saved)
    if version != FORMAT:
        raise UserError(f"{path / STATE_FILE}: checkpoint format {version!r}; this version reads formats 1 and {FORMAT}")
    return saved


def _from_format_1(saved: dict) -> dict:
    upgraded = {"format": FORMAT, "config": saved.get("config", {}), "model": {"logit_scale": saved["logit_scale"]}}
    for name in ("optimizer", "scheduler", "scaler", "rng"):
        upgraded[name] = saved[name]
    upgraded["train"] = {k: v for k, v in saved["train"].items() if k != "position"}
    upgraded["data"] = saved["positions"]
    return upgraded


def load_trained(run_dir: Path, checkpoint: str = "latest", device: str | torch.device = "cpu"):
    """(model in eval mode, tokenizer, TrainConfig) of a training run: its base model (or tiny
    model), with the trained weights (adapters, mask module, logit scale) of `checkpoint` ("latest"
    or a folder)."""
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
    CheckpointManager(run_dir, {"model": TrainedWeights(model)}).restore(path)
    return model.to(device).eval(), tokenizer, config
