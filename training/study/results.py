"""A study's results, one row per cell, read back from what its runs left in MLflow (so a
resumed study reports every cell, those of earlier attempts included): times, throughput,
speed-up and efficiency against the 1-worker cell of the same strategy and batch, memory and
model state per rank, MFU, the final evaluation, time-to-target, and the estimate beside the
measured time."""

from __future__ import annotations

import math

from training import lease
from training.study.plan import StudyPlan

NAN = float("nan")
# The columns of results.csv, in order (docs/study.md explains each).
COLUMNS = [
    "task", "strategy", "workers", "batch_size", "accumulation", "global_batch", "steps",
    "status", "estimate_s", "estimate_source", "wall_s", "estimate_error", "training_s",
    "samples_per_s", "speedup", "efficiency", "training_speedup", "peak_mem_bytes_per_rank",
    "model_state_bytes_per_rank", "mfu", "eval_loss", "metric_name", "metric_value",
    "target", "time_to_target_s", "steps_to_target", "resumed", "run_name", "run_id", "error",
]  # fmt: skip


def _base(p: StudyPlan, planned, entry: dict) -> dict:
    cell = planned.cell
    return {
        "task": cell.task,
        "strategy": cell.strategy,
        "workers": cell.workers,
        "batch_size": cell.batch,
        "accumulation": cell.accumulation,
        "global_batch": cell.global_batch,
        "steps": planned.work.steps,
        "status": entry.get("status", "left out" if not planned.fits else "not run"),
        "estimate_s": NAN if planned.estimate.seconds is None else planned.estimate.seconds,
        "estimate_source": planned.estimate.source,
        "estimate_parts": planned.estimate.parts,  # results.json: beside the measured `perf`
        "target": p.settings.targets.get(cell.task, NAN),
        "run_name": cell.run_name(p.study_id),
        "run_id": entry.get("run_id", ""),
        "error": entry.get("error", ""),
    }


def _measured(tracker, run_id: str, primary: str, target: float, started: float) -> dict:
    run = tracker.client.get_run(run_id)
    m = run.data.metrics
    perf = {k.removeprefix(lease.PERF): v for k, v in m.items() if k.startswith(lease.PERF)}
    resumed = "resumed_from_step" in run.data.tags
    row = {
        "wall_s": perf.get("wall_s", NAN),
        "training_s": perf.get("training_s", NAN),
        "samples_per_s": perf.get("samples_per_s", NAN),
        "peak_mem_bytes_per_rank": perf.get("peak_mem_bytes_per_rank", NAN),
        "model_state_bytes_per_rank": perf.get("model_state_bytes_per_rank", NAN),
        "mfu": perf.get("mfu", NAN),
        "eval_loss": m.get("eval/loss", NAN),
        "metric_name": primary,
        "metric_value": m.get(f"eval/{primary}", NAN),
        "metrics": {k: v for k, v in m.items() if k.startswith("eval/")},
        "perf": perf,
        "resumed": resumed,
        "time_to_target_s": NAN,
        "steps_to_target": NAN,
    }
    if not math.isnan(target):
        history = sorted(
            tracker.client.get_metric_history(run_id, f"eval/{primary}"), key=lambda x: x.step
        )
        reached = next((point for point in history if point.value >= target), None)
        if reached is not None:
            row["steps_to_target"] = reached.step
            # From the cell's start to the end of that evaluation; a cell resumed after a
            # stop has no single start to count from.
            if not resumed and started:
                row["time_to_target_s"] = reached.timestamp / 1000 - started
    return row


def collect(p: StudyPlan, tracker, cells_record: dict) -> list[dict]:
    """Every cell's row, measured where its run finished."""
    from training.tasks import TASKS

    rows = []
    for planned in p.cells:
        entry = cells_record.get(planned.cell.key, {})
        row = _base(p, planned, entry)
        if row["status"] == "finished" and row["run_id"]:
            primary = TASKS[planned.cell.task].primary_metric
            row.update(
                _measured(tracker, row["run_id"], primary, row["target"], entry.get("started", 0))
            )
            if not math.isnan(row["estimate_s"]) and row["wall_s"] > 0:
                row["estimate_error"] = (row["estimate_s"] - row["wall_s"]) / row["wall_s"]
        rows.append(row)
    return add_scaling(rows)


def add_scaling(rows: list[dict]) -> list[dict]:
    """Speed-up = the 1-worker cell's time over this cell's, of the same task, strategy and
    batch (the design's definition, on total wall time; `training_speedup` on the training
    phase alone); efficiency = speed-up / workers."""

    def ok(row: dict) -> bool:
        return row["status"] == "finished" and row.get("wall_s", 0) > 0

    one = {
        (r["task"], r["strategy"], r["batch_size"]): r for r in rows if ok(r) and r["workers"] == 1
    }
    for row in rows:
        base = one.get((row["task"], row["strategy"], row["batch_size"]))
        row.setdefault("estimate_error", NAN)
        if ok(row) and base is not None:
            row["speedup"] = base["wall_s"] / row["wall_s"]
            row["efficiency"] = row["speedup"] / row["workers"]
            row["training_speedup"] = base["training_s"] / row["training_s"]
        else:
            row["speedup"] = row["efficiency"] = row["training_speedup"] = NAN
    return rows
