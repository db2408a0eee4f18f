"""Planning a search: everything checked before anything is written (the space, the data, the
model, the batch sizes and storage), and where a search to continue left off."""

from __future__ import annotations

import time
from dataclasses import dataclass

from core.errors import UserError
from training import data as datamod
from training import lifecycle, models, storage
from training.config import TrainConfig, build_config
from training.progress import console
from training.targets import Target
from training.tasks import TASKS, Task
from training.tune.space import SearchSpec, build_spec, read_space_file


@dataclass
class SearchPlan:
    cfg: TrainConfig  # the fixed settings every trial starts from
    explicit: dict  # the settings the user gave (go into best.yaml)
    task: Task
    target: Target
    spec: SearchSpec
    search_id: str
    continuing: bool
    parent_run_id: str | None
    splits: datamod.Splits
    source: models.ModelSource
    max_t: int = 0  # ASHA's horizon, in steps
    grace_period: int = 0


def steps(cfg: TrainConfig, rows: int, batch: int) -> tuple[int, int]:
    """(steps between two reports, total steps) of a trial with this batch size."""
    per_epoch = max(1, rows // cfg.workers // batch // cfg.gradient_accumulation_steps)
    total = cfg.max_steps if cfg.max_steps > 0 else per_epoch * cfg.num_train_epochs
    interval = min(cfg.save_steps, per_epoch) if cfg.save_steps else per_epoch
    return min(interval, total), total


def _batch_sizes(cfg: TrainConfig, spec: SearchSpec) -> list[int]:
    dim = spec.space.get("per_device_train_batch_size")
    if dim is None:
        return [cfg.per_device_train_batch_size]
    if dim.kind == "randint":
        return list(dim.values)  # the extremes bound the step counts
    return [int(v) for v in dim.values]


def plan(
    cfg: TrainConfig, explicit: dict, target: Target, space_file: str = "", samples: str = ""
) -> SearchPlan:
    task = TASKS[cfg.task]
    search_id, record = lifecycle.find(cfg, target, lifecycle.SEARCH, task)
    if record is not None:
        # Continue with the search's own settings and space.
        cfg = build_config([record["config"], {"run_name": search_id, "resume": True}])
        explicit = record["explicit"]
        spec = build_spec(record["space_file"], cfg, task, "the saved space")
        spec.num_samples = record["num_samples"]
        console.print(f"continuing search [bold]{search_id}[/] where it stopped")
    else:
        raw = read_space_file(space_file) if space_file else {}
        spec = build_spec(raw, cfg, task, f"SPACE={space_file}" if space_file else "space", samples)
    if cfg.workers != 1:
        raise UserError(
            f"WORKERS={cfg.workers}: tuning runs each trial on one worker (one GPU or a few "
            "cores) and trials side by side; drop WORKERS, or use `make train` for one "
            "multi-worker run"
        )
    cfg.run_name = search_id or f"{task.name}-{cfg.profile}-tune-{time.strftime('%Y%m%d-%H%M%S')}"

    splits = datamod.prepare(task, cfg)
    lifecycle.check_data(lifecycle.SEARCH, cfg.run_name, record, splits.manifest)
    source = lifecycle.saved_source(record) if record else models.resolve(task, cfg)
    rows = len(splits.train)
    for batch in _batch_sizes(cfg, spec):
        lifecycle.check_batches(
            build_config([cfg.to_dict(), {"per_device_train_batch_size": batch}]), rows
        )
    storage.check(target.runs_root)
    lifecycle.check_precision(cfg, target)
    horizon = [steps(cfg, rows, b) for b in _batch_sizes(cfg, spec)]
    max_t = max(total for _, total in horizon)
    grace = spec.grace_period or min(interval for interval, _ in horizon)
    return SearchPlan(
        cfg=cfg,
        explicit=explicit,
        task=task,
        target=target,
        spec=spec,
        search_id=cfg.run_name,
        continuing=record is not None,
        parent_run_id=record["parent_run_id"] if record else None,
        splits=splits,
        source=source,
        max_t=max_t,
        grace_period=min(grace, max_t),
    )
