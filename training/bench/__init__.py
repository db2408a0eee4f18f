"""`make bench`: DDP vs FSDP x workers x per-device batch size, measured, not estimated.

Each cell is a Ray Train run of the same worker set-up as training, timing the training step
itself. The package, by concern: `plan` (the axes, data, model and cells, checked before
anything starts), `cell` (the measurement in every worker), `run` (the matrix on the driver,
speed-up and efficiency), `report` (files, plots, table and MLflow runs)."""

from training.bench.plan import BenchPlan, Cell, matrix, plan, show
from training.bench.run import add_scaling, fit_cell, run, run_matrix

__all__ = [
    "BenchPlan",
    "Cell",
    "add_scaling",
    "fit_cell",
    "matrix",
    "plan",
    "run",
    "run_matrix",
    "show",
]
