"""The checkpoint manager: states in, the same states out; atomic saves, pruning, finding the latest."""

import random

import numpy as np
import pytest
import torch

from fcdata.errors import UserError
from fcdata.loader import LoaderPosition
from fctrain.checkpoint import (
    CHECKPOINT_FILES,
    STATE_FILE,
    CheckpointManager,
    RankPositions,
    RngState,
    TrainState,
    checkpoints,
    find_checkpoint,
    read_state,
)
from fctrain.config import TrainConfig
from fctrain.model import ALPHA_WEIGHTS


class FakeWeights:
    """A "model" state that writes the files a checkpoint folder must hold, and one number."""

    def __init__(self, value: float = 0.0):
        self.value = value
        self.loaded_from = None

    def save_files(self, directory):
        for name in CHECKPOINT_FILES[1:] + (ALPHA_WEIGHTS,):
            (directory / name).write_text(str(self.value))

    def load_files(self, directory):
        self.loaded_from = directory

    def state_dict(self):
        return {"value": torch.tensor(self.value)}

    def load_state_dict(self, state):
        self.value = float(state["value"])


class Counter:
    """A stateful thing added later (an EMA, a sampler): one more entry in `states`, nothing else."""

    def __init__(self):
        self.count = 0

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.count = state["count"]


def make_states(value: float = 0.0):
    layer = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=0.1)
    layer(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    train = TrainState(step=5, samples_seen=80, position=LoaderPosition(epoch=1, batches=2, emitted=[3, 4]))
    return {
        "model": FakeWeights(value), "optimizer": optimizer, "train": train,
        "data": RankPositions(train.position), "rng": RngState(), "ema": Counter(),
    }


def test_restore_gives_back_every_state_and_the_config_is_checked(tmp_path):
    """What save wrote, restore puts back into fresh objects, a new state included; a checkpoint of
    a run with other settings is refused when a config is given."""
    config = TrainConfig()
    saved = make_states(1.5)
    saved["ema"].count = 7
    path = CheckpointManager(tmp_path, saved, config=config).save(5)
    random_after_save = (random.random(), np.random.rand(), torch.rand(1).item())
    fresh = make_states()
    fresh["train"].position = LoaderPosition(emitted=[0, 0])
    fresh["data"] = RankPositions(fresh["train"].position)
    CheckpointManager(tmp_path, fresh, config=config).restore(path)
    assert fresh["model"].value == 1.5 and fresh["model"].loaded_from == path and fresh["ema"].count == 7
    assert (fresh["train"].step, fresh["train"].samples_seen) == (5, 80)
    assert fresh["train"].position.state_dict() == {"epoch": 1, "batches": 2, "emitted": [3, 4]}
    assert fresh["optimizer"].state_dict()["state"][0]["step"] == saved["optimizer"].state_dict()["state"][0]["step"]
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == random_after_save
    state = read_state(path)
    assert state["format"] == 2 and "position" not in state["train"] and state["data"] == [fresh["train"].position.state_dict()]
    other = TrainConfig.from_dict({"lora": {"rank": 4}})
    with pytest.raises(UserError, match="other settings"):
        CheckpointManager(tmp_path, make_states(), config=other).restore(path)


def test_the_last_k_are_kept_and_latest_is_the_highest_step(tmp_path):
    """Pruning keeps keep_last complete checkpoints; `latest` orders by step number (past 7 digits)
    and passes over folders that are not complete checkpoints."""
    manager = CheckpointManager(tmp_path, make_states(), keep_last=2)
    for step in (9_999_998, 9_999_999, 10_000_000):
        manager.save(step)
    (tmp_path / "checkpoints" / "step-99999999").mkdir()  # incomplete: no files
    names = [p.name for p in checkpoints(tmp_path / "checkpoints")]
    assert names == ["step-9999999", "step-10000000"]
    assert manager.latest().name == "step-10000000" == find_checkpoint(tmp_path, "latest").name
    assert manager.saved_step == 10_000_000
    assert not list((tmp_path / "checkpoints").glob(".step-*"))  # no temporaries left


def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path):
    """A state that fails while the checkpoint is written leaves no folder and no temporary behind."""
    states = make_states()
    manager = CheckpointManager(tmp_path, states)
    manager.save(1)

    def broken(directory):
        raise OSError(28, "No space left on device")

    states["model"].save_files = broken
    with pytest.raises(OSError):
        manager.save(2)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-0000001"]


def test_restore_names_what_a_checkpoint_lacks_and_reserved_names_are_refused(tmp_path):
    """A state the checkpoint does not hold is a one-line error; "config" cannot be a state's name."""
    path = CheckpointManager(tmp_path, {k: v for k, v in make_states().items() if k != "ema"}).save(3)
    with pytest.raises(UserError, match="no 'ema' state"):
        CheckpointManager(tmp_path, make_states()).restore(path)
    with pytest.raises(ValueError, match="reserved"):
        CheckpointManager(tmp_path, {"config": Counter()})
    (path / STATE_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a checkpoint this version can read"):
        read_state(path)


def test_a_rank_beyond_those_that_wrote_the_checkpoint_is_refused():
    """Resuming with more processes than wrote the positions fails with a one-line error."""
    with pytest.raises(UserError, match="written by 1 ranks"):
        RankPositions(LoaderPosition(), rank=1, world=2).load_state_dict([LoaderPosition().state_dict()])
