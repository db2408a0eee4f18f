"""A study's cells: task x strategy x per-device batch x workers, each one `make train` run of
its own settings, with the budget equal across cells (epochs, or training samples) and the
scaling mode explicit (weak: the same per-device batch; strong: the same global batch, kept
with gradient accumulation)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from core.errors import UserError
from training.config import TrainConfig


@dataclass(frozen=True)
class Cell:
    task: str
    strategy: str
    workers: int
    batch: int  # per-device batch size
    accumulation: int  # gradient accumulation steps

    @property
    def key(self) -> str:
        """The cell's name in the study's record and in its run's name."""
        return f"{self.task}-{self.strategy}-x{self.workers}-b{self.batch}"

    def label(self) -> str:
        more = f" acc{self.accumulation}" if self.accumulation > 1 else ""
        return f"{self.task} {self.strategy} x{self.workers} b{self.batch}{more}"

    def run_name(self, study_id: str) -> str:
        return f"{study_id}-{self.key}"

    @property
    def global_batch(self) -> int:
        return self.batch * self.workers * self.accumulation


def matrix(
    tasks: list[str],
    strategies: list[str],
    workers: list[int],
    batches: list[int],
    scaling: str,
    accumulation: int,
) -> list[Cell]:
    """Every cell, in the order they run: by task, strategy and batch, fewest workers first
    (the 1-worker cell is what the others' speed-up is measured against). Strong scaling keeps
    each batch's global batch at that of the most workers: fewer workers accumulate more."""
    most = max(workers)
    if scaling == "strong":
        uneven = [w for w in workers if most % w]
        if uneven:
            raise UserError(
                f"STUDY_SCALING=strong keeps the global batch of {most} workers with gradient "
                f"accumulation, which needs worker counts that divide {most} (not "
                f"{', '.join(map(str, uneven))}); change STUDY_WORKERS"
            )
    cells = []
    for task in tasks:
        for strategy in strategies:
            for batch in batches:
                for count in sorted(workers):
                    factor = most // count if scaling == "strong" else 1
                    cells.append(Cell(task, strategy, count, batch, accumulation * factor))
    return cells


def settings(cell: Cell, study_id: str, epochs: int, samples: int, registered: str) -> dict:
    """The cell's own settings, laid over the user's: what `make train` would be given."""
    layer = {
        "task": cell.task,
        "strategy": cell.strategy,
        "workers": cell.workers,
        "per_device_train_batch_size": cell.batch,
        "gradient_accumulation_steps": cell.accumulation,
        "run_name": cell.run_name(study_id),
        # Each cell a model version of its own name, not a new version of the task's model.
        "registered_model_name": registered or f"study-{cell.task}",
    }
    if epochs:
        layer["num_train_epochs"] = epochs
    if samples:
        steps = samples // cell.global_batch
        if steps < 1:
            raise UserError(
                f"STUDY_SAMPLES={samples} is less than one global batch of {cell.label()} "
                f"({cell.global_batch} samples); raise STUDY_SAMPLES or lower STUDY_BATCH"
            )
        layer["max_steps"] = steps
    return layer


@dataclass(frozen=True)
class Work:
    """What a cell does, as the training loop counts it."""

    steps: int
    evaluations: int  # one per epoch (the last one possibly partial)
    checkpoints: int

    @classmethod
    def of(cls, cfg: TrainConfig, train_rows: int) -> Work:
        per_epoch = max(
            train_rows
            // cfg.workers
            // cfg.per_device_train_batch_size
            // cfg.gradient_accumulation_steps,
            1,
        )
        steps = cfg.max_steps if cfg.max_steps > 0 else per_epoch * cfg.num_train_epochs
        evaluations = math.ceil(steps / per_epoch)
        extra = steps // cfg.save_steps if cfg.save_steps else 0
        return cls(steps, evaluations, evaluations + extra)
