"""Checkpoints load without unpickling code: whoever can write the checkpoint storage cannot run
anything at RESUME=1. A planted pickle is refused, in one line at the command line; the state a
checkpoint holds (model, optimizer, schedule, RNGs) still comes back, from this format and from
the one before it."""

from __future__ import annotations

import enum
import os
import pickle
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import kill_after_first_checkpoint, run_cli
from training import checkpoints
from training.config import TrainConfig
from training.models import build_smoke
from training.step import build_optimizer, linear_schedule
from training.tasks import TASKS


class Planted:
    """What an attacker writes: unpickling it runs a shell command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def trained_state():
    task = TASKS["classify"]
    frame = task.generate(64, seed=1)
    labels = list(task.labels)
    tokenizer, model = build_smoke(task, frame, 1, labels)
    optimizer = build_optimizer(TrainConfig(), model, torch.device("cpu"))
    scheduler = linear_schedule(optimizer, 2, 10)
    items = task.encode(frame.head(8), tokenizer, 32, {n: i for i, n in enumerate(labels)})
    model(**task.collate(tokenizer)(items)).loss.backward()
    optimizer.step()
    scheduler.step()
    return model, optimizer, scheduler


@pytest.fixture
def saved(tmp_path):
    model, optimizer, scheduler = trained_state()
    random.seed(3)
    np.random.seed(3)
    torch.manual_seed(3)
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    checkpoints.save(folder, model, optimizer, scheduler, {"global_step": 1, "pending": []}, 0)
    return folder, (random.random(), float(np.random.rand()), float(torch.rand(1)))


def load(folder: Path) -> dict:
    model, optimizer, scheduler = trained_state()
    return checkpoints.load(folder, model, optimizer, scheduler, 0)


def next_draws() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_a_checkpoint_restores_the_training_state_and_random_streams(saved):
    folder, draws = saved
    random.seed(99)
    np.random.seed(99)
    assert load(folder)["global_step"] == 1
    assert next_draws() == draws  # every RNG continues where the checkpoint left it


def test_a_checkpoint_of_the_earlier_format_still_loads(saved):
    """Before, numpy's RNG state was kept as a numpy array (which now loads as plain data)."""
    folder, draws = saved
    extra = torch.load(folder / "extra_rank0.pt", weights_only=True)
    name, keys, position, has_gauss, cached = extra["rng"]["numpy"]
    old = (name, keys.numpy().astype(np.uint32), position, has_gauss, cached)
    torch.save({**extra, "rng": {**extra["rng"], "numpy": old}}, folder / "extra_rank0.pt")
    load(folder)
    assert next_draws() == draws


class ByName(pickle.Pickler):
    """Pickles Enum members as Python 3.11.2 does (the stack's nodes): getattr(cls, name)."""

    def reducer_override(self, obj):
        if isinstance(obj, enum.Enum):
            return getattr, (type(obj), obj.name)
        return NotImplemented


def test_metadata_written_by_another_python_still_loads(saved):
    folder, draws = saved
    metadata = checkpoints._SafeReader(folder).read_metadata()
    with open(folder / ".metadata", "wb") as f:
        ByName(f).dump(metadata)
    assert b"getattr" in (folder / ".metadata").read_bytes()
    load(folder)
    assert next_draws() == draws


def test_getattr_on_anything_but_dcp_enums_is_refused(saved):
    # getattr(torch.Size, "__class__"): a name lookup on an allowed class, not an enum member.
    (saved[0] / ".metadata").write_bytes(b"cbuiltins\ngetattr\n(ctorch\nSize\nV__class__\ntR.")
    with pytest.raises(checkpoints.UnsafeCheckpoint, match="holds builtins.getattr"):
        load(saved[0])


@pytest.mark.parametrize("planted_in", [".metadata", "extra_rank0.pt"])
def test_a_planted_pickle_is_refused_and_never_runs(saved, tmp_path, planted_in):
    folder = saved[0]
    marker = tmp_path / "ran"
    if planted_in == ".metadata":  # what DCP reads first, with pickle
        (folder / planted_in).write_bytes(pickle.dumps(Planted(marker)))
    else:  # a torch.save of the schedule and RNGs
        torch.save({"scheduler": Planted(marker)}, folder / planted_in)
    with pytest.raises(checkpoints.UnsafeCheckpoint) as refused:
        load(folder)
    assert not marker.exists(), "the planted code ran"
    message = str(refused.value)
    assert f"{planted_in} holds posix.system, which loading would run" in message, message
    assert "\n" not in message


def test_a_planted_value_in_a_shard_is_refused(tmp_path):
    """DCP keeps the optimizer's settings as small torch.save values inside the shards."""
    from io import BytesIO
    from types import SimpleNamespace

    marker = tmp_path / "ran"
    value = BytesIO()
    torch.save(Planted(marker), value)
    value.seek(0)
    item = SimpleNamespace(dest_index=SimpleNamespace(fqn="optimizer.param_groups.0.lr"))
    with pytest.raises(checkpoints.UnsafeCheckpoint, match="holds posix.system"):
        checkpoints._SafePlanner().load_bytes(item, value)
    assert not marker.exists(), "the planted code ran"


@pytest.mark.slow
def test_resuming_a_planted_checkpoint_fails_in_one_line(tmp_path):
    state = tmp_path / "state"
    # fakenews (XLNet) on 2 DDP workers: past its second step, where DDP once refused the
    # parameters XLNet leaves without a gradient.
    kill_after_first_checkpoint(
        state, "planted", ["max_steps=100000", "save_steps=2", "logging_steps=2"],
        TASK="fakenews", WORKERS="2", STRATEGY="ddp",
    )  # fmt: skip
    runs = state / "embedded" / "runs" / "planted"
    marker = tmp_path / "ran"
    planted = [folder for folder in runs.glob("checkpoint_*") if folder.is_dir()]
    assert planted, "no checkpoint to plant into"
    for folder in planted:
        (folder / ".metadata").write_bytes(pickle.dumps(Planted(marker)))
    resumed = run_cli(state, "train", RESUME="1", TASK="fakenews")
    assert resumed.returncode == 2, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    lines = resumed.stderr.strip().splitlines()
    assert len(lines) == 1, resumed.stderr
    assert lines[0].startswith("error: resuming refused: "), lines[0]
    assert "/.metadata holds posix.system, which loading would run, so it was refused" in lines[0]
    assert not marker.exists(), "the planted code ran"
    shutil.rmtree(runs)
