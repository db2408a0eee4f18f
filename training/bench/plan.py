"""Planning a benchmark: the axes checked, the data and model resolved, the matrix of cells;
everything a real bench and its dry run share, before anything starts."""

from __future__ import annotations

import os
from dataclasses import dataclass

from training import data, dryrun, models
from training.config import TrainConfig
from training.settings import BenchSettings
from training.targets import Target
from training.tasks import TASKS


@dataclass(frozen=True)
class Cell:
    strategy: str
    workers: int
    batch_size: int

    def label(self) -> str:
        return f"{self.strategy} x{self.workers} b{self.batch_size}"


def matrix(strategies: list[str], workers: list[int], batches: list[int]) -> list[Cell]:
    return [Cell(s, w, b) for s in strategies for b in batches for w in workers]


@dataclass
class BenchPlan:
    cfg: TrainConfig  # every cell's settings but its strategy, workers and batch size
    target: Target
    axes: BenchSettings
    splits: data.Splits
    source: models.ModelSource

    def cells(self, capacity: int) -> list[Cell]:
        """The matrix, with the default worker counts capped at `capacity` (GPUs or cores)."""
        axes = self.axes
        return matrix(axes.strategies, axes.workers_for(capacity), axes.batches)


def plan(cfg: TrainConfig, target: Target, environ=None) -> BenchPlan:
    axes = BenchSettings.read(environ)  # bad axes fail before any work
    task = TASKS[cfg.task]
    splits = data.prepare(task, cfg)
    source = models.resolve(task, cfg)
    return BenchPlan(cfg, target, axes, splits, source)


def show(p: BenchPlan) -> None:
    """DRY_RUN=1: the matrix as it would run on this machine's cores."""
    cells = p.cells(os.cpu_count() or 1)
    dryrun.show(
        "bench",
        p.cfg,
        p.target,
        p.splits,
        p.source,
        cells=f"{len(cells)}: " + ", ".join(c.label() for c in cells),
        steps=f"{p.axes.warmup} warm-up + {p.axes.steps} timed per cell",
    )
