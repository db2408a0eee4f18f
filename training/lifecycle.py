"""The life of a run or a search, from its record: find the latest, load, refuse what cannot
continue, check its data, write it atomically, mark it finished; and the checks every command
makes before it starts anything.

A record is a JSON file in the run's folder under the state folder (`runs/<name>/run.json` for
`make train`, `search.json` for `make tune`): the resolved config, the MLflow run, the data
manifest and the model source. It is what `RESUME=1` and `RUN_NAME=` continue from."""

from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from core.errors import UserError
from training import models
from training.config import TrainConfig
from training.targets import Target
from training.tasks import Task


@dataclass(frozen=True)
class Kind:
    """What a record belongs to: a training run or a search."""

    file: str  # the record's file name in the run folder
    noun: str  # "run" or "search", as the messages say it
    command: str  # the make target that starts one
    # Does naming an existing one (RUN_NAME=) continue it without RESUME=1?
    continues_by_name: bool


RUN = Kind("run.json", "run", "train", continues_by_name=True)
SEARCH = Kind("search.json", "search", "tune", continues_by_name=False)


def record_file(target: Target, kind: Kind, name: str) -> Path:
    return target.run_folder(name) / kind.file


def latest(target: Target, kind: Kind, task: Task) -> str | None:
    """The name of the task's most recently written record of this kind, if any; a study's
    cells are the study's to continue (`make study RESUME=1`), not `make train`'s."""
    runs = target.state_dir / "runs"
    records = list(runs.glob(f"*/{kind.file}")) if runs.is_dir() else []
    loaded = {p: json.loads(p.read_text()) for p in records}
    mine = [p for p, r in loaded.items() if r["config"]["task"] == task.name and not r.get("study")]
    return max(mine, key=lambda p: p.stat().st_mtime).parent.name if mine else None


def load(target: Target, kind: Kind, name: str) -> dict | None:
    path = record_file(target, kind, name)
    return json.loads(path.read_text()) if path.is_file() else None


def find(cfg: TrainConfig, target: Target, kind: Kind, task: Task) -> tuple[str, dict | None]:
    """The name and record to continue (`RESUME=1`, `RUN_NAME=`), or ("", None) for a new
    one; refuses what cannot continue with the line that says what to do instead."""
    name = cfg.run_name
    if cfg.resume and not name:
        name = latest(target, kind, task) or ""
        if not name:
            raise UserError(
                f"RESUME=1: there is no earlier {task.name} {kind.noun} to continue; "
                f"start one with `make {kind.command} TASK={task.name}`"
            )
    record = load(target, kind, name) if name else None
    if cfg.resume and record is None:
        raise UserError(
            f"RESUME=1: {kind.noun} {name!r} has no record under {target.state_dir}; "
            f"check RUN_NAME, or start a new {kind.noun} without RESUME"
        )
    if record is not None and record.get("finished"):
        best = f"; its best config is {record['best_file']}" if record.get("best_file") else ""
        raise UserError(
            f"{kind.noun} {name!r} already finished{best}; pick a new RUN_NAME or drop it "
            f"to start a fresh {kind.noun}"
        )
    if record is not None and not cfg.resume and not kind.continues_by_name:
        raise UserError(
            f"{kind.noun} {name!r} exists; continue it with RESUME=1 or pick a new RUN_NAME"
        )
    return name, record


def check_data(kind: Kind, name: str, record: dict | None, manifest: dict) -> None:
    """A run continues on the data it started with, or not at all."""
    if record is not None and manifest["train"]["sha256"] != record["manifest"]["train"]["sha256"]:
        raise UserError(
            f"the data of {kind.noun} {name!r} changed since it started (train hash "
            f"differs); continue it with its own data or start a new {kind.noun}"
        )


def saved_source(record: dict) -> models.ModelSource:
    return models.ModelSource(**record["source"])


def write(target: Target, kind: Kind, name: str, record: dict) -> None:
    """Write the record atomically: a reader sees the old one or the new one, never half."""
    folder = target.run_folder(name)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (kind.file + ".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(folder / kind.file)


def mark_finished(target: Target, kind: Kind, name: str, **fields) -> None:
    record = load(target, kind, name) or {}
    write(target, kind, name, {**record, **fields, "finished": True})


def source_fields(source: models.ModelSource) -> dict:
    return {"location": source.location, "kind": source.kind}


# --- checks made before anything starts -------------------------------------------------------


def check_batches(cfg: TrainConfig, rows: int) -> None:
    per_worker = rows // cfg.workers
    batches = per_worker // cfg.per_device_train_batch_size
    if batches < cfg.gradient_accumulation_steps:
        raise UserError(
            f"{rows} training rows give {batches} batches per worker per epoch, fewer than "
            f"gradient_accumulation_steps={cfg.gradient_accumulation_steps}; lower "
            "per_device_train_batch_size, gradient_accumulation_steps or WORKERS, or add data"
        )


def check_precision(cfg: TrainConfig, target: Target) -> None:
    """fp16 needs a GPU. Only knowable here for the embedded target (a stack's nodes decide)."""
    if cfg.precision != "fp16" or not target.embedded:
        return
    import torch

    if not torch.cuda.is_available():
        raise UserError("precision=fp16 needs a GPU; on CPU use precision=fp32 or bf16")


@contextmanager
def removed_on_failure(folder: Path):
    """Remove `folder` if the block fails and the folder is new: nothing half-written stays."""
    new = not folder.exists()
    try:
        yield
    except BaseException:
        if new:
            shutil.rmtree(folder, ignore_errors=True)
        raise
