"""Save and restore the full training state with torch.distributed.checkpoint (DCP).

DCP writes one shard file per rank plus metadata, so the same code serves DDP (whole model on
every rank) and FSDP (sharded), and a checkpoint loads into a different number of workers.
Each rank writes into its own local folder and hands it to `ray.train.report`, which gathers
the folders into one checkpoint under the run's storage path (a local dir or s3://).

Loading never unpickles code: whoever can write the checkpoint storage must not be able to run
anything at `RESUME=1`. DCP's metadata is read by an unpickler that builds only DCP's own
metadata classes, its small values and the per-rank extras load with `weights_only=True`; a
file that names anything else is refused in one line (UnsafeCheckpoint)."""

from __future__ import annotations

import enum
import io
import json
import pickle
import random
import re
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)

from training.strategies import unwrap

PROGRESS_FILE = "progress.json"  # step counters and pending metrics, written by rank 0
MODEL_DIR = "model"  # the final Hugging Face model folder, in the last checkpoint


class UnsafeCheckpoint(Exception):
    """A checkpoint file that would run code (or build objects) when loaded: refused."""


# What DCP's metadata file holds, and nothing else: its dataclasses, sizes, dtypes, layouts and
# the relative paths of the shard files.
_METADATA_CLASSES = {
    ("torch.distributed.checkpoint.metadata", name)
    for name in (
        "Metadata", "TensorStorageMetadata", "BytesStorageMetadata", "ChunkStorageMetadata",
        "MetadataIndex", "TensorProperties", "StorageMeta", "_MEM_FORMAT_ENCODING",
    )
} | {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),  # a layout looked up by its name
    ("pathlib", "PosixPath"),
    ("pathlib", "PurePosixPath"),
}  # fmt: skip
# Checkpoints written before this format kept numpy's RNG state as a numpy array: arrays of
# plain numbers load, nothing else of numpy.
_NUMPY_ARRAYS = [np._core.multiarray._reconstruct, np.ndarray, np.dtype, np.dtypes.UInt32DType]


def _enum_member(cls, name: str):
    """`getattr` as Python 3.11.2 (the stack's nodes) pickles an Enum member by name: for
    members of DCP's own enums only."""
    allowed = isinstance(cls, type) and (cls.__module__, cls.__name__) in _METADATA_CLASSES
    if allowed and issubclass(cls, enum.Enum) and name in cls.__members__:
        return cls[name]
    raise pickle.UnpicklingError(f"GLOBAL builtins.getattr on {cls!r} is not DCP metadata")


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        dtype = module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)
        if (module, name) in _METADATA_CLASSES or dtype:
            return super().find_class(module, name)
        if (module, name) == ("builtins", "getattr"):
            return _enum_member
        raise pickle.UnpicklingError(f"GLOBAL {module}.{name} is not DCP metadata")


class _SafeReader(FileSystemReader):
    """DCP's reader with the metadata read by the unpickler above."""

    def read_metadata(self, *args, **kwargs):
        path = self._get_metadata_path(kwargs.get("rank"))
        with self.fs.create_stream(path, "rb") as metadata_file:
            content = metadata_file.read()
        metadata = _refusing(path, lambda: _MetadataUnpickler(io.BytesIO(content)).load())
        if getattr(metadata, "storage_meta", None) is None:
            from torch.distributed.checkpoint.metadata import StorageMeta

            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class _SafePlanner(DefaultLoadPlanner):
    """DCP's load planner with its small values (the optimizer's settings) loaded as data."""

    def load_bytes(self, read_item, value: io.BytesIO) -> None:
        loaded = _refusing(
            f"{read_item.dest_index.fqn} of the checkpoint",
            lambda: torch.load(value, weights_only=True),
        )
        if self.flatten_state_dict:
            from torch.distributed.checkpoint._traverse import set_element

            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], loaded)
        else:
            self.state_dict[read_item.dest_index.fqn] = loaded


def _refusing(what, load):
    try:
        return load()
    except pickle.UnpicklingError as exc:
        named = re.search(r"GLOBAL ([\w.]+)", str(exc))
        holds = f"holds {named.group(1)}" if named else "is not plain data"
        raise UnsafeCheckpoint(
            f"{what} {holds}, which loading would run, so it was refused (nothing of it ran): "
            "the checkpoint was not written by this project. Remove that checkpoint from the "
            "run's storage (Ray then resumes from the one before), or start a new run"
        ) from None


def rng_state() -> dict:
    """The RNG states as plain data (numpy's array as a tensor), loadable without pickles."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }


def _set_numpy_state(state) -> None:
    name, keys, position, has_gauss, cached = state
    keys = keys.numpy() if torch.is_tensor(keys) else keys
    np.random.set_state((name, keys.astype(np.uint32), position, has_gauss, cached))


def save(folder: Path, model, optimizer, scheduler, progress: dict, rank: int) -> None:
    model_sd, optim_sd = get_state_dict(model, optimizer)
    dcp.save({"model": model_sd, "optimizer": optim_sd}, checkpoint_id=str(folder))
    torch.save(
        {"scheduler": scheduler.state_dict(), "rng": rng_state()}, folder / f"extra_rank{rank}.pt"
    )
    if rank == 0:
        (folder / PROGRESS_FILE).write_text(json.dumps(progress))


def load(folder: Path, model, optimizer, scheduler, rank: int) -> dict:
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optimizer": optim_sd}
    # Partial: parameters that never received a gradient have no optimizer state saved.
    reader = _SafeReader(folder)
    reader.read_metadata()  # refused here, before DCP would fold the refusal into its own error
    try:
        dcp.load(state, storage_reader=reader, planner=_SafePlanner(allow_partial_load=True))
    except CheckpointException as exc:  # a refused value, on this rank or another
        refused = [e for e, _ in exc.failures.values() if isinstance(e, UnsafeCheckpoint)]
        if refused:
            raise refused[0] from None
        raise
    set_state_dict(
        model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"]
    )
    extra_file = folder / f"extra_rank{rank}.pt"
    if not extra_file.exists():  # resumed with more workers than saved: take rank 0's
        extra_file = folder / "extra_rank0.pt"
    with torch.serialization.safe_globals(_NUMPY_ARRAYS):
        extra = _refusing(extra_file.name, lambda: torch.load(extra_file, weights_only=True))
    scheduler.load_state_dict(extra["scheduler"])
    random.setstate(extra["rng"]["python"])
    _set_numpy_state(extra["rng"]["numpy"])
    torch.set_rng_state(extra["rng"]["torch"])
    return json.loads((folder / PROGRESS_FILE).read_text())


def export_model(folder: Path, model, model_class, tokenizer, rank: int) -> None:
    """Write a plain Hugging Face folder of the whole model (gathered from shards) on rank 0."""
    full = get_model_state_dict(
        model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    if rank != 0:
        return
    config = unwrap(model).config
    plain = model_class.from_config(config)
    plain.load_state_dict(full, strict=False)
    plain.tie_weights()
    plain.save_pretrained(folder / MODEL_DIR)
    tokenizer.save_pretrained(folder / MODEL_DIR)


def new_folder() -> Path:
    return Path(tempfile.mkdtemp(prefix="ckpt-"))
