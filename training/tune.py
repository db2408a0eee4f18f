"""`tune`: a Ray Tune search over the project's training loop, scheduled by ASHA.

Each trial runs the loop directly in its Tune trial on one worker (one GPU, or a few cores):
no `TorchTrainer` nested inside a trial, so a small machine never waits for CPUs that a
nested trainer's workers hold (ray-project/ray#54305). Every checkpoint of a trial carries a
fresh evaluation, which ASHA compares at the training step (`step`) to stop weak trials early.

MLflow: one parent run per search (the space, then the best trial's config and metric) and one
child run per trial (`mlflow.parentRunId`). The best config lands in
`reports/tune/<search>/best.yaml`, which `make train CONFIG=<file>` takes as is. Checkpoints
and Tune's own state go to the runs storage, so `RESUME=1` continues an interrupted search
without training its finished trials again.

A space file (`SPACE=<yaml>`) overrides the defaults:

    num_samples: 10                 # trials (TUNE_SAMPLES=N overrides)
    metric: accuracy                # the task's own metric (default) or `loss`
    space:                          # setting: {loguniform|uniform|randint: [low, high]},
      learning_rate: {loguniform: [1.0e-5, 1.0e-3]}   # {choice: [a, b, ...]} or a fixed value
      per_device_train_batch_size: {choice: [16, 32, 64]}
      optim: {choice: [adamw, sgd]}
    scheduler: {grace_period: 20, reduction_factor: 2}  # ASHA, in training steps
    resources: {cpus: 2, gpus: 1}   # per trial; default from the machine
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from training import cluster, models, runner, storage, tracking
from training import data as datamod
from training.config import TrainConfig, build_config, read_yaml_mapping
from core.errors import UserError
from training.progress import console
from core.paths import reports_root
from training.targets import Target
from training.tasks import TASKS, Task

SEARCH_RECORD = "search.json"
DISTRIBUTIONS = ("loguniform", "uniform", "randint", "choice")
FILE_KEYS = ("num_samples", "metric", "space", "scheduler", "resources")
SCHEDULER_KEYS = ("grace_period", "reduction_factor")
RESOURCE_KEYS = ("cpus", "gpus")
# What a trial may not vary: the run's identity and what the search itself decides.
NOT_TUNABLE = ("task", "profile", "model", "data", "run_name", "resume", "workers", "strategy")
DEFAULT_SPACE = {
    "learning_rate": {"loguniform": [1e-5, 1e-3]},
    "per_device_train_batch_size": {"choice": [16, 32, 64]},
    "optim": {"choice": ["adamw", "sgd"]},
}
DEFAULT_SAMPLES = 10


@dataclass
class Dimension:
    """One setting of the search space."""

    kind: str  # a DISTRIBUTIONS entry, or "fixed"
    values: list  # [low, high] for ranges, the options for choice, [value] for fixed

    def sampler(self):
        from ray import tune

        if self.kind == "loguniform":
            return tune.loguniform(*self.values)
        if self.kind == "uniform":
            return tune.uniform(*self.values)
        if self.kind == "randint":
            return tune.randint(self.values[0], self.values[1] + 1)  # both bounds included
        if self.kind == "choice":
            return tune.choice(self.values)
        return self.values[0]

    def describe(self) -> str:
        if self.kind == "fixed":
            return repr(self.values[0])
        return f"{self.kind}({', '.join(repr(v) for v in self.values)})"


@dataclass
class SearchSpec:
    space: dict[str, Dimension]
    num_samples: int
    metric: str  # e.g. "eval/accuracy"
    mode: str  # "max" or "min"
    grace_period: int | None = None  # None: one report interval of the fastest trial
    reduction_factor: float = 2.0
    cpus: float | None = None  # None: from the machine
    gpus: float | None = None
    raw: dict = field(default_factory=dict)  # the file's content, kept with the search

    def sampled(self) -> dict[str, Dimension]:
        return {k: d for k, d in self.space.items() if d.kind != "fixed"}


# --- the space file ---------------------------------------------------------------------------


def _number(where: str, value: Any, whole: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{where} must be a number, got {value!r}") from None
    if isinstance(value, bool) or (whole and not number.is_integer()):
        raise UserError(f"{where} must be a whole number, got {value!r}")
    return int(number) if whole else number


def _dimension(key: str, spec: Any, base: TrainConfig, where: str) -> Dimension:
    label = f"{where}: space.{key}"
    if key not in TrainConfig.field_names():
        raise UserError(f"{label}: unknown setting {key!r}; `make settings` lists the known ones")
    if key in NOT_TUNABLE:
        raise UserError(f"{label}: {key} cannot vary between trials; set it outside the space")
    kind_of_field = type(getattr(base, key)).__name__
    if not isinstance(spec, dict):
        dim = Dimension("fixed", [spec])
    else:
        if len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
            raise UserError(
                f"{label} must be a value or one of {{{', '.join(DISTRIBUTIONS)}: ...}}, "
                f"got {spec!r}"
            )
        kind, values = next(iter(spec.items()))
        if not isinstance(values, list):
            raise UserError(f"{label}: {kind} takes a list, got {values!r}")
        if kind == "choice":
            if not values:
                raise UserError(f"{label}: the choice list is empty; give at least one value")
        else:
            if len(values) != 2:
                raise UserError(f"{label}: {kind} takes [low, high], got {values!r}")
            whole = kind == "randint"
            if kind_of_field == "int" and not whole:
                raise UserError(f"{label}: {key} is a whole number; use randint or choice")
            if kind_of_field not in ("int", "float"):
                raise UserError(f"{label}: {key} is not a number; use choice")
            low, high = (_number(f"{label} bound", v, whole) for v in values)
            if low > high:
                raise UserError(f"{label}: lower bound {low:g} is above upper bound {high:g}")
            if kind == "loguniform" and low <= 0:
                raise UserError(f"{label}: loguniform needs bounds above 0, got {low:g}")
            values = [low, high]
        dim = Dimension(kind, values)
    # Every value a trial can get must make a valid config (types and ranges).
    for value in dim.values:
        try:
            parsed = build_config([base.to_dict(), {key: value}])
        except UserError as exc:
            raise UserError(f"{label}: {exc}") from None
        if dim.kind in ("choice", "fixed"):
            dim.values[dim.values.index(value)] = getattr(parsed, key)
    return dim


def _section(raw: dict, name: str, known: tuple[str, ...], where: str) -> dict:
    section = raw.get(name) or {}
    if not isinstance(section, dict):
        raise UserError(f"{where}: {name} must be a mapping of {', '.join(known)}")
    unknown = sorted(set(section) - set(known))
    if unknown:
        raise UserError(
            f"{where}: unknown key {name}.{unknown[0]}; {name} takes {', '.join(known)}"
        )
    return section


def read_space_file(path: str) -> dict:
    return read_yaml_mapping(path, "SPACE", f"search space ({', '.join(FILE_KEYS)})")


def build_spec(
    raw: dict, base: TrainConfig, task: Task, where: str, samples: str = ""
) -> SearchSpec:
    """Check a space file's content (or {} for the defaults) against the base config."""
    unknown = sorted(set(raw) - set(FILE_KEYS))
    if unknown:
        raise UserError(
            f"{where}: unknown key {unknown[0]!r}; a space file takes {', '.join(FILE_KEYS)}"
        )
    space_raw = raw.get("space") or {}
    if not isinstance(space_raw, dict):
        raise UserError(f"{where}: space must be a mapping of setting: distribution")
    merged = {**DEFAULT_SPACE, **space_raw}
    space = {key: _dimension(key, spec, base, where) for key, spec in merged.items()}

    num_samples = _number(f"{where}: num_samples", raw.get("num_samples", DEFAULT_SAMPLES), True)
    if samples:
        num_samples = _number("TUNE_SAMPLES", samples, True)
    if num_samples < 1:
        raise UserError(f"num_samples must be at least 1, got {num_samples}")

    metric_name = raw.get("metric") or task.primary_metric
    if metric_name == "loss":
        metric, mode = "eval/loss", "min"
    elif metric_name == task.primary_metric:
        metric, mode = f"eval/{task.primary_metric}", task.primary_mode
    else:
        raise UserError(
            f"{where}: metric {metric_name!r} is not tuned for {task.name}; "
            f"use {task.primary_metric} or loss"
        )

    scheduler = _section(raw, "scheduler", SCHEDULER_KEYS, where)
    grace = scheduler.get("grace_period")
    if grace is not None:
        grace = _number(f"{where}: scheduler.grace_period", grace, True)
        if grace < 1:
            raise UserError(f"{where}: scheduler.grace_period must be at least 1 step")
    factor = _number(f"{where}: scheduler.reduction_factor", scheduler.get("reduction_factor", 2.0))
    if factor <= 1:
        raise UserError(f"{where}: scheduler.reduction_factor must be above 1, got {factor:g}")

    resources = _section(raw, "resources", RESOURCE_KEYS, where)
    cpus = resources.get("cpus")
    gpus = resources.get("gpus")
    if cpus is not None and _number(f"{where}: resources.cpus", cpus) <= 0:
        raise UserError(f"{where}: resources.cpus must be above 0, got {cpus}")
    if gpus is not None and _number(f"{where}: resources.gpus", gpus) < 0:
        raise UserError(f"{where}: resources.gpus must be 0 or more, got {gpus}")
    return SearchSpec(
        space=space,
        num_samples=num_samples,
        metric=metric,
        mode=mode,
        grace_period=grace,
        reduction_factor=factor,
        cpus=None if cpus is None else float(cpus),
        gpus=None if gpus is None else float(gpus),
        raw=raw,
    )


# --- planning: everything checked before anything is written ----------------------------------


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
    source: models.ModelSource | None
    max_t: int = 0  # ASHA's horizon, in steps
    grace_period: int = 0


def _record_path(target: Target, search_id: str) -> Path:
    return target.run_folder(search_id) / SEARCH_RECORD


def _latest_search(target: Target, task: Task) -> str | None:
    runs = target.state_dir / "runs"
    records = list(runs.glob(f"*/{SEARCH_RECORD}")) if runs.is_dir() else []
    mine = [p for p in records if json.loads(p.read_text())["config"]["task"] == task.name]
    return max(mine, key=lambda p: p.stat().st_mtime).parent.name if mine else None


def _steps(cfg: TrainConfig, rows: int, batch: int) -> tuple[int, int]:
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
    search_id = cfg.run_name
    if cfg.resume and not search_id:
        search_id = _latest_search(target, task)
        if search_id is None:
            raise UserError(
                f"RESUME=1: there is no earlier {task.name} search to continue; "
                f"start one with `make tune TASK={task.name}`"
            )
    record_file = _record_path(target, search_id) if search_id else None
    record = json.loads(record_file.read_text()) if record_file and record_file.is_file() else None
    if cfg.resume and record is None:
        raise UserError(
            f"RESUME=1: search {search_id!r} has no record under {target.state_dir}; "
            "check RUN_NAME, or start a new search without RESUME"
        )
    if record is not None and record.get("finished"):
        raise UserError(
            f"search {search_id!r} already finished; its best config is "
            f"{record.get('best_file')}; pick a new RUN_NAME to search again"
        )
    if record is not None and not cfg.resume:
        raise UserError(
            f"search {search_id!r} exists; continue it with RESUME=1 or pick a new RUN_NAME"
        )
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
    if not search_id:
        search_id = f"{task.name}-{cfg.profile}-tune-{time.strftime('%Y%m%d-%H%M%S')}"
    cfg.run_name = search_id

    splits = datamod.prepare(task, cfg)
    if (
        record is not None
        and splits.manifest["train"]["sha256"] != record["manifest"]["train"]["sha256"]
    ):
        raise UserError(
            f"the data of search {search_id!r} changed since it started; continue it with "
            "its own data or start a new search"
        )
    source = models.resolve(task, cfg)
    if record is not None:
        source = models.ModelSource(**record["source"]) if record["source"] else None
    rows = len(splits.train)
    for batch in _batch_sizes(cfg, spec):
        runner.check_batches(
            build_config([cfg.to_dict(), {"per_device_train_batch_size": batch}]), rows
        )
    storage.check(target.runs_root)
    if target.embedded:
        import torch

        runner.check_precision(cfg, torch.cuda.is_available())
    steps = [_steps(cfg, rows, b) for b in _batch_sizes(cfg, spec)]
    max_t = max(total for _, total in steps)
    grace = spec.grace_period or min(interval for interval, _ in steps)
    return SearchPlan(
        cfg=cfg,
        explicit=explicit,
        task=task,
        target=target,
        spec=spec,
        search_id=search_id,
        continuing=record is not None,
        parent_run_id=record["parent_run_id"] if record else None,
        splits=splits,
        source=source,
        max_t=max_t,
        grace_period=min(grace, max_t),
    )


# --- the trial ---------------------------------------------------------------------------------


def _child_run(setup: dict, trial_id: str, cfg: dict) -> str:
    """The trial's MLflow child run: found again when a resumed trial continues."""
    mlflow_client = tracking.client(setup["tracking_uri"])
    found = mlflow_client.search_runs(
        [setup["experiment_id"]],
        filter_string=(
            f"tags.`mlflow.parentRunId` = '{setup['parent_run_id']}' "
            f"and tags.`tune.trial_id` = '{trial_id}'"
        ),
        max_results=1,
    )
    if found:
        mlflow_client.update_run(found[0].info.run_id, status="RUNNING")
        return found[0].info.run_id
    run = mlflow_client.create_run(
        setup["experiment_id"],
        run_name=cfg["run_name"],
        tags={
            "mlflow.parentRunId": setup["parent_run_id"],
            "tune.trial_id": trial_id,
            "task": cfg["task"],
            "profile": cfg["profile"],
            "strategy": cfg["strategy"],
            "workers": "1",
        },
    )
    from mlflow.entities import Param

    params = [Param(k, str(v)) for k, v in cfg.items()]
    mlflow_client.log_batch(run.info.run_id, params=params)
    return run.info.run_id


def run_trial(params: dict, setup: dict, frames: dict) -> None:
    """A Tune function trainable: the project's loop on this trial's one worker."""
    import ray
    import ray.tune
    import torch

    from training.loop import train_loop_per_worker

    trial_id = ray.tune.get_context().get_trial_id()
    cfg = {**setup["cfg"], **params, "run_name": f"{setup['search_id']}-{trial_id}"}
    torch.set_num_threads(max(1, int(setup["cpus"])))
    run_id = _child_run(setup, trial_id, cfg)
    train_loop_per_worker(
        {
            "cfg": cfg,
            "labels": setup["labels"],
            "source": setup["source"],
            "data": ray.put(frames),
            "tracking_uri": setup["tracking_uri"],
            "run_id": run_id,
            "session": "tune",
        }
    )
    mlflow_client = tracking.client(setup["tracking_uri"])
    mlflow_client.set_tag(run_id, "tune.outcome", "completed")
    mlflow_client.set_terminated(run_id, status="FINISHED")


# --- the search --------------------------------------------------------------------------------


def _start_parent(p: SearchPlan, experiment_id: str, source: models.ModelSource) -> str:
    import mlflow

    mlflow_client = tracking.client(p.target.tracking_uri)
    run = mlflow_client.create_run(
        experiment_id,
        run_name=p.search_id,
        tags={
            "task": p.task.name,
            "profile": p.cfg.profile,
            "tune.search": "asha",
            **tracking.provenance_tags(),
            "model_source": source.describe(),
            "data_source": p.splits.source,
        },
    )
    mlflow.set_tracking_uri(p.target.tracking_uri)
    params = {
        "num_samples": p.spec.num_samples,
        "metric": p.spec.metric,
        "mode": p.spec.mode,
        "scheduler": "asha",
        "scheduler.time_attr": "step",
        "scheduler.max_t": p.max_t,
        "scheduler.grace_period": p.grace_period,
        "scheduler.reduction_factor": p.spec.reduction_factor,
        **{f"space.{k}": d.describe() for k, d in p.spec.space.items()},
    }
    with mlflow.start_run(run_id=run.info.run_id):
        mlflow.log_params({k: str(v) for k, v in params.items()})
        mlflow.log_dict(p.cfg.to_dict(), "search/config.json")
        mlflow.log_dict(p.splits.manifest, "data/manifest.json")
    return run.info.run_id


def _write_record(p: SearchPlan, parent_run_id: str, source: models.ModelSource | None) -> None:
    folder = p.target.run_folder(p.search_id)
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "config": p.cfg.to_dict(),
        "explicit": p.explicit,
        "space_file": p.spec.raw,
        "num_samples": p.spec.num_samples,
        "parent_run_id": parent_run_id,
        "manifest": p.splits.manifest,
        "source": {"location": source.location, "kind": source.kind} if source else None,
    }
    tmp = folder / (SEARCH_RECORD + ".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(folder / SEARCH_RECORD)


def _resources(spec: SearchSpec) -> dict[str, float]:
    import ray

    cores = int(ray.cluster_resources().get("CPU", 1))
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if spec.gpus is not None and spec.gpus > gpus:
        raise UserError(
            f"resources.gpus={spec.gpus:g} per trial, but this cluster has {gpus} GPU(s); "
            "lower it in the space file"
        )
    if spec.cpus is not None and spec.cpus > cores:
        raise UserError(
            f"resources.cpus={spec.cpus:g} per trial, but this cluster has {cores} CPU(s); "
            "lower it in the space file"
        )
    # GPU hosts: one GPU per trial with its share of the cores; CPU hosts: up to four trials
    # side by side (one on a 2-core machine leaves a core for the other and the driver).
    trial_gpus = spec.gpus if spec.gpus is not None else (1 if gpus else 0)
    if spec.cpus is not None:
        trial_cpus = spec.cpus
    elif gpus:
        trial_cpus = max(1, cores // gpus)
    else:
        trial_cpus = max(1, cores // 4)
    return {"CPU": trial_cpus, "GPU": trial_gpus}


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


def _write_best(p: SearchPlan, best, folder: Path) -> Path:
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


def _trial_id(result) -> str:
    return (result.metrics or {}).get("trial_id") or Path(result.path).name


def _completed(p: SearchPlan, result) -> bool:
    batch = int(result.config.get("per_device_train_batch_size", p.cfg.per_device_train_batch_size))
    total = _steps(p.cfg, len(p.splits.train), batch)[1]
    return (result.metrics or {}).get("step", 0) >= total


def _finish_children(p: SearchPlan, experiment_id: str, parent_run_id: str, results) -> None:
    """End the child runs of trials that ASHA stopped or that failed.

    A trial stopped by the scheduler never returns from its last report, so the metric points
    of that report (saved inside its checkpoint) are written to MLflow here."""
    mlflow_client = tracking.client(p.target.tracking_uri)
    by_trial = {_trial_id(result): result for result in results}
    children = mlflow_client.search_runs(
        [experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'"
    )
    for child in children:
        if child.info.status != "RUNNING":
            continue
        run_id = child.info.run_id
        result = by_trial.get(child.data.tags.get("tune.trial_id"))
        if result is not None and result.checkpoint is not None:
            with result.checkpoint.as_directory() as folder:
                progress = json.loads((Path(folder) / "progress.json").read_text())
            tracking.MetricBuffer(p.target.tracking_uri, run_id, progress["pending"]).flush()
        if result is None or result.error is not None:
            mlflow_client.set_tag(run_id, "tune.outcome", "failed")
            mlflow_client.set_terminated(run_id, status="FAILED")
        elif _completed(p, result):
            mlflow_client.set_tag(run_id, "tune.outcome", "completed")
            mlflow_client.set_terminated(run_id, status="FINISHED")
        else:
            step = (result.metrics or {}).get("step")
            mlflow_client.set_tag(run_id, "tune.outcome", f"stopped early at step {step}")
            mlflow_client.set_terminated(run_id, status="KILLED")


SHORT_NAMES = {"learning_rate": "lr", "per_device_train_batch_size": "batch"}


def _summary_table(p: SearchPlan, results, best_trial: str):
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
        trial_id = _trial_id(result)
        if trial_id == best_trial:
            outcome += " (best)"
        cells = [_show(result.config.get(k)) for k in keys]
        shown = "-" if value is None else f"{value:.4f}"
        rank = float("inf") if value is None else (-value if p.spec.mode == "max" else value)
        rows.append((rank, [trial_id, *cells, str(metrics.get("step", "-")), shown, outcome]))
    for _, cells in sorted(rows, key=lambda row: row[0]):
        table.add_row(*cells)
    return table


def _show(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def run(p: SearchPlan) -> dict:
    """Run (or continue) the search; returns the best trial's settings and metric."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    target, cfg, task, spec = p.target, p.cfg, p.task, p.spec
    experiment_id = tracking.experiment_id(target.tracking_uri, task.name, target.artifact_root)
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "5")  # Tune's own state, for RESUME
    # Ctrl-C reaches the trials too (one process group), which would end them as errors that
    # Tune's own handler reports as a finished search: let it stop the search here instead.
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    cluster.start(1, target.tracking_uri)
    resources = _resources(spec)

    folder = target.run_folder(p.search_id)
    parent_run_id = p.parent_run_id
    with runner.removed_on_failure(folder):
        # one base model for every trial: they differ only in what the search varies
        source = runner.base_model(p.source, task, p.splits, cfg, folder)
        if parent_run_id is None:
            parent_run_id = _start_parent(p, experiment_id, source)
            _write_record(p, parent_run_id, source)
    url = target.run_url(experiment_id, parent_run_id)
    console.print(
        f"[bold]{task.name}[/] search [bold]{p.search_id}[/] · profile {cfg.profile} · "
        f"{spec.num_samples} trials · ASHA on {spec.metric} ({spec.mode}), steps "
        f"{p.grace_period}..{p.max_t} · per trial {resources['CPU']:g} CPU, "
        f"{resources['GPU']:g} GPU · {source.describe()}"
    )
    for key, dim in spec.space.items():
        console.print(f"  {key}: {dim.describe()}")
    console.print(f"MLflow parent run {parent_run_id}: {url}")

    setup = {
        "cfg": {k: v for k, v in cfg.to_dict().items() if k != "resume"},
        "labels": p.splits.label_names,
        "source": {"location": source.location, "kind": source.kind},
        "tracking_uri": target.tracking_uri,
        "experiment_id": experiment_id,
        "parent_run_id": parent_run_id,
        "search_id": p.search_id,
        "cpus": resources["CPU"],
    }
    frames = {"train": p.splits.train, "validation": p.splits.validation}
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, setup=setup, frames=frames), resources
    )
    storage_path, storage_filesystem = storage.ray_storage(target.runs_root)
    run_config = tune.RunConfig(
        name=p.search_id,
        storage_path=storage_path,
        storage_filesystem=storage_filesystem,
        checkpoint_config=tune.CheckpointConfig(num_to_keep=cfg.save_total_limit),
        failure_config=tune.FailureConfig(max_failures=0),
        verbose=1,
    )
    path = f"{storage_path.rstrip('/')}/{p.search_id}"  # on storage_filesystem, if given
    mlflow_client = tracking.client(target.tracking_uri)
    mlflow_client.update_run(parent_run_id, status="RUNNING")
    if p.continuing and tune.Tuner.can_restore(path, storage_filesystem=storage_filesystem):
        tuner = tune.Tuner.restore(
            path,
            trainable=trainable,
            resume_unfinished=True,
            resume_errored=True,
            storage_filesystem=storage_filesystem,
        )
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={k: d.sampler() for k, d in spec.sampled().items()},
            tune_config=tune.TuneConfig(
                metric=spec.metric,
                mode=spec.mode,
                num_samples=spec.num_samples,
                search_alg=BasicVariantGenerator(random_state=cfg.seed),
                scheduler=ASHAScheduler(
                    time_attr="step",
                    max_t=p.max_t,
                    grace_period=p.grace_period,
                    reduction_factor=spec.reduction_factor,
                    stop_last_trials=False,  # a trial that reaches max_t ends on its own
                ),
            ),
            run_config=run_config,
        )
    try:
        results = tuner.fit()  # Ctrl-C: Tune saves its state and returns what it has
        interrupted = results.num_terminated + results.num_errors < spec.num_samples
    except KeyboardInterrupt:
        interrupted = True
    finally:
        ray.shutdown()
    if interrupted:
        mlflow_client.set_terminated(parent_run_id, status="KILLED")
        console.print(
            f"stopped. Finished trials and checkpoints are kept; continue with `make tune "
            f"TASK={task.name} RESUME=1` (or RUN_NAME={p.search_id} RESUME=1)"
        )
        raise KeyboardInterrupt

    _finish_children(p, experiment_id, parent_run_id, results)
    scored = [r for r in results if r.error is None and spec.metric in (r.metrics or {})]
    if not scored:
        mlflow_client.set_terminated(parent_run_id, status="FAILED")
        errors = [str(r.error).strip().splitlines()[-1] for r in results if r.error is not None]
        raise UserError(
            f"no trial of search {p.search_id} reported {spec.metric}"
            + (f" (first error: {errors[0]})" if errors else "")
            + f"; fix the cause and continue with RUN_NAME={p.search_id} RESUME=1"
        )
    best = results.get_best_result(metric=spec.metric, mode=spec.mode, scope="last")
    best_file = _write_best(p, best, reports_root() / "tune" / p.search_id)
    value = float(best.metrics[spec.metric])
    best_trial = best.metrics["trial_id"]

    import mlflow

    mlflow.set_tracking_uri(target.tracking_uri)
    with mlflow.start_run(run_id=parent_run_id):
        mlflow.log_params({f"best.{k}": str(best.config[k]) for k in spec.sampled()})
        mlflow.log_param("best.trial_id", best_trial)
        mlflow.log_metric(f"best.{spec.metric}", value)
        mlflow.log_artifact(str(best_file), "search")
    mlflow_client.set_terminated(parent_run_id, status="FINISHED")
    record_file = _record_path(target, p.search_id)
    record = json.loads(record_file.read_text())
    record.update(finished=True, best_file=str(best_file))
    record_file.write_text(json.dumps(record, indent=2))

    console.print(_summary_table(p, results, best_trial))
    settings = {k: best.config[k] for k in spec.sampled()}
    console.print(
        f"best trial [bold]{best_trial}[/]: {spec.metric} {value:.4f} with "
        + ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in settings.items()
        )
    )
    console.print(f"best config: {best_file}")
    console.print(f"train it:    make train CONFIG={best_file}")
    console.print(f"MLflow parent run: {url}")
    return {"best_file": str(best_file), "metric": value, "config": settings, "trial": best_trial}
