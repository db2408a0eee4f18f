"""A search's results: the outcome of every trial's MLflow child run, `best.yaml` (which
`make train CONFIG=` takes as is) and the summary table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from training import tracking
from training.config import build_config
from training.tune.plan import SearchPlan, steps


def best_settings(p: SearchPlan, config: dict) -> dict:
    """What best.yaml holds: the settings the user gave, and the best trial's sampled ones."""
    fixed = {k: v for k, v in p.explicit.items() if k not in ("resume", "run_name")}
    chosen = {k: config[k] for k in p.spec.sampled()}
    for key, dim in p.spec.space.items():
        if dim.kind == "fixed":
            chosen[key] = dim.values[0]
    out = {"task": p.task.name, "profile": p.cfg.profile, **fixed, **chosen}
    parsed = build_config([out]).to_dict()  # typed values, as `make train CONFIG=` reads them
    return {k: parsed[k] for k in out}


def write_best(p: SearchPlan, best, folder: Path) -> Path:
    settings = best_settings(p, best.config)
    value = best.metrics[p.spec.metric]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "best.yaml"
    header = (
        f"# best trial {best.metrics['trial_id']} of search {p.search_id}: "
        f"{p.spec.metric} {value:.4f} at step {best.metrics['step']}\n"
        f"# train with it: make train CONFIG={path}\n"
    )
    path.write_text(header + yaml.safe_dump(settings, sort_keys=False))
    return path


def trial_id(result) -> str:
    return (result.metrics or {}).get("trial_id") or Path(result.path).name


def _completed(p: SearchPlan, result) -> bool:
    batch = int(result.config.get("per_device_train_batch_size", p.cfg.per_device_train_batch_size))
    total = steps(p.cfg, len(p.splits.train), batch)[1]
    return (result.metrics or {}).get("step", 0) >= total


def finish_children(p: SearchPlan, experiment_id: str, parent_run_id: str, results) -> None:
    """End the child runs of trials that ASHA stopped or that failed.

    A trial stopped by the scheduler never returns from its last report, so the metric points
    of that report (saved inside its checkpoint) are written to MLflow here."""
    tracker = tracking.Tracker(p.target.tracking_uri)
    by_trial = {trial_id(result): result for result in results}
    for child in tracker.children(experiment_id, parent_run_id):
        if child.info.status != "RUNNING":
            continue
        run_id = child.info.run_id
        result = by_trial.get(child.data.tags.get("tune.trial_id"))
        if result is not None and result.checkpoint is not None:
            with result.checkpoint.as_directory() as folder:
                progress = json.loads((Path(folder) / "progress.json").read_text())
            tracking.MetricBuffer(tracker, run_id, progress["pending"]).flush()
        if result is None or result.error is not None:
            tracker.finish(run_id, "FAILED", tags={"tune.outcome": "failed"})
        elif _completed(p, result):
            tracker.finish(run_id, "FINISHED", tags={"tune.outcome": "completed"})
        else:
            step = (result.metrics or {}).get("step")
            tracker.finish(run_id, "KILLED", tags={"tune.outcome": f"stopped early at step {step}"})


SHORT_NAMES = {"learning_rate": "lr", "per_device_train_batch_size": "batch"}


def summary_table(p: SearchPlan, results, best_trial: str):
    from rich.table import Table

    keys = list(p.spec.sampled())
    metric = p.spec.metric.removeprefix("eval/")
    table = Table(title=f"search {p.search_id}")
    for column in ["trial", *(SHORT_NAMES.get(k, k) for k in keys), "step", metric, "outcome"]:
        table.add_column(column, justify="left" if column in ("trial", "outcome") else "right")
    rows = []
    for result in results:
        metrics = result.metrics or {}
        value = metrics.get(p.spec.metric)
        if result.error is not None:
            outcome = "failed"
        elif _completed(p, result):
            outcome = "completed"
        else:
            outcome = "stopped early"
        name = trial_id(result)
        if name == best_trial:
            outcome += " (best)"
        cells = [_show(result.config.get(k)) for k in keys]
        shown = "-" if value is None else f"{value:.4f}"
        rank = float("inf") if value is None else (-value if p.spec.mode == "max" else value)
        rows.append((rank, [name, *cells, str(metrics.get("step", "-")), shown, outcome]))
    for _, cells in sorted(rows, key=lambda row: row[0]):
        table.add_row(*cells)
    return table


def _show(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
