"""A cell's time, estimated before it runs: from the cell's own earlier estimate (a resumed
study on the same hardware), from an earlier finished run of the same speed-relevant settings
on the same hardware (every run logs where its time went, `perf/*`), or from a probe.

A cell's time = start-up + steps x step time + evaluations x one evaluation + checkpoints x one
checkpoint + the final model's export and logging. A finished run gives each term as it was
measured (scaled to this cell's steps, evaluations and checkpoints); a probe measures the step,
the evaluation, a checkpoint and the export, and its own start-up."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field

from training import lease
from training.study.cells import Work

# What the driver adds to a cell beyond its workers' time, measured on the embedded target:
# the MLflow run with its dataset inputs, the data handed to Ray, the model logged and
# registered, the run's record.
DRIVER_S = 3.0


@dataclass(frozen=True)
class Estimate:
    seconds: float | None  # None: not known yet (no earlier run; the probe has not run)
    source: str  # "probe", "run <name>", "recorded", "" when unknown
    # Its terms, named as a run's `perf/*` (startup_s, training_s, ...), so the report can
    # set each beside what the cell measured.
    parts: dict = field(default_factory=dict)

    @classmethod
    def of(cls, parts: dict[str, float], source: str) -> Estimate:
        return cls(sum(parts.values()), source, {k: round(v, 2) for k, v in parts.items()})

    def text(self) -> str:
        if self.seconds is None:
            return "not measured yet"
        return f"{duration(self.seconds)} ({self.source})"


UNKNOWN = Estimate(None, "")


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def machine() -> str:
    """This machine's hardware, for runs of the embedded target (a stack names its own): the
    GPUs if any, else the CPU and its cores."""
    import torch

    if torch.cuda.is_available():
        names = {torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())}
        return f"{torch.cuda.device_count()} x {'/'.join(sorted(names))}"
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} cores"


def from_probe(measured: dict, work: Work) -> Estimate:
    parts = {
        "startup_s": measured["overhead_s"] + measured["cold_s"],
        "training_s": work.steps * measured["step_time_mean_s"],
        "evaluation_s": work.evaluations * measured["eval_s"],
        "checkpoints_s": work.checkpoints * measured["checkpoint_s"],
        # the model written by rank 0 (in the last checkpoint), then logged by the driver
        "model_logging_s": 2 * measured["export_s"] + DRIVER_S,
    }
    return Estimate.of(parts, "probe")


def from_history(tracker, experiments: list[str], key: str, hardware: str, work: Work):
    """The estimate from the latest finished run of the same speed key on `hardware`, or
    None when MLflow holds none."""
    ids = []
    for name in experiments:
        experiment = tracker.client.get_experiment_by_name(name)
        if experiment is not None:
            ids.append(experiment.experiment_id)
    if not ids or not hardware:
        return None
    hardware = hardware.replace("'", "")
    runs = tracker.client.search_runs(
        ids,
        filter_string=f"tags.speed_key = '{key}' and tags.hardware = '{hardware}' "
        "and attributes.status = 'FINISHED'",
        order_by=["attributes.end_time DESC"],
        max_results=10,
    )
    for run in runs:
        m = {k.removeprefix(lease.PERF): v for k, v in run.data.metrics.items()}
        if not m.get("wall_s") or not m.get("steps"):
            continue
        scaled = {
            "training_s": m.get("training_s", 0) / m["steps"] * work.steps,
            "evaluation_s": m.get("evaluation_s", 0)
            / max(m.get("evaluations", 1), 1)
            * work.evaluations,
            "checkpoints_s": m.get("checkpoints_s", 0)
            / max(m.get("checkpoints", 1), 1)
            * work.checkpoints,
        }
        phases = m.get("training_s", 0) + m.get("evaluation_s", 0) + m.get("checkpoints_s", 0)
        fixed = {"startup_s": max(m["wall_s"] - phases, 0)}  # with model logging and the rest
        return Estimate.of({**fixed, **scaled}, f"run {run.info.run_name}")
    return None
