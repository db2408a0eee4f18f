"""The space-file language of `make tune`: settings and their distributions, the metric, ASHA's
scheduler and per-trial resources, checked against the base config before anything starts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.errors import UserError
from training.config import TrainConfig, build_config, read_yaml_mapping
from training.tasks import Task

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
