"""Save and restore the full training state with torch.distributed.checkpoint (DCP).

DCP writes one shard file per rank plus metadata, so the same code serves DDP (whole model on
every rank) and FSDP (sharded), and a checkpoint loads into a different number of workers.
Each rank writes into its own local folder and hands it to `ray.train.report`, which gathers
the folders into one checkpoint under the run's storage path (a local dir or s3://)."""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import DefaultLoadPlanner
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)

from training.strategies import unwrap

PROGRESS_FILE = "progress.json"  # step counters and pending metrics, written by rank 0
MODEL_DIR = "model"  # the final Hugging Face model folder, in the last checkpoint


def rng_state() -> dict:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }


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
    dcp.load(state, checkpoint_id=str(folder), planner=DefaultLoadPlanner(allow_partial_load=True))
    set_state_dict(
        model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"]
    )
    extra_file = folder / f"extra_rank{rank}.pt"
    if not extra_file.exists():  # resumed with more workers than saved: take rank 0's
        extra_file = folder / "extra_rank0.pt"
    extra = torch.load(extra_file, weights_only=False)
    scheduler.load_state_dict(extra["scheduler"])
    random.setstate(extra["rng"]["python"])
    np.random.set_state(extra["rng"]["numpy"])
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
