"""The settings besides a run's own (TrainConfig): the benchmark's axes, the study's matrix
and budget, the search's space and size, and where things go. Each is typed, read from its
environment variable (the make variable of the same name), listed by `make settings`, and
checked before anything starts."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from core.errors import UserError
from core.flags import flag, setting
from training.lease import GUARD_MINUTES, OVERRUN


@dataclass(frozen=True)
class Variable:
    name: str  # the environment / make variable
    default: str
    meaning: str


def _axis(name: str, raw: str, cast: Callable, allowed: tuple = ()) -> list:
    values = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            value = cast(item)
        except ValueError:
            raise UserError(f"{name}={raw!r}: {item!r} is not valid; e.g. {name}=1,2") from None
        if allowed and value not in allowed:
            raise UserError(f"{name}: {item!r} is not one of {', '.join(map(str, allowed))}")
        if cast is int and value < 1:
            raise UserError(f"{name}: values must be 1 or more, got {item}")
        values.append(value)
    if not values:
        raise UserError(f"{name} is empty; give a comma-separated list")
    return list(dict.fromkeys(values))


@dataclass
class BenchSettings:
    """`make bench`'s matrix: strategies x workers x per-device batch sizes."""

    strategies: list[str]
    workers: list[int]  # [] = {1, 2, 4} capped at the GPUs or cores available
    batches: list[int]
    steps: int  # timed optimizer steps per cell
    warmup: int  # untimed steps before them

    VARIABLES = (
        Variable("BENCH_STRATEGIES", "ddp,fsdp", "strategies to compare"),
        Variable("BENCH_WORKERS", "", "worker counts; default 1,2,4 capped at GPUs/cores"),
        Variable("BENCH_BATCH", "8,16,32", "per-device batch sizes"),
        Variable("BENCH_STEPS", "10", "timed optimizer steps per cell"),
        Variable("BENCH_WARMUP", "3", "untimed warm-up steps per cell"),
    )

    @classmethod
    def read(cls, environ=None) -> BenchSettings:
        env = _values(cls.VARIABLES, environ)
        workers = env["BENCH_WORKERS"]
        return cls(
            strategies=_axis("BENCH_STRATEGIES", env["BENCH_STRATEGIES"], str, ("ddp", "fsdp")),
            workers=_axis("BENCH_WORKERS", workers, int) if workers else [],
            batches=_axis("BENCH_BATCH", env["BENCH_BATCH"], int),
            steps=_axis("BENCH_STEPS", env["BENCH_STEPS"], int)[0],
            warmup=_axis("BENCH_WARMUP", env["BENCH_WARMUP"], int)[0],
        )

    def workers_for(self, capacity: int) -> list[int]:
        return self.workers or [w for w in (1, 2, 4) if w <= max(1, capacity)]


def _whole(name: str, raw: str) -> int:
    """A budget given as a whole number of at least 1, or 0 when not given."""
    if not raw:
        return 0
    try:
        value = int(raw)
    except ValueError:
        raise UserError(f"{name}={raw!r} is not a whole number; e.g. {name}=2") from None
    if value < 1:
        raise UserError(f"{name} must be at least 1, got {value}: a budget of 0 trains nothing")
    return value


def _targets(raw: str, tasks: list[str]) -> dict[str, float]:
    """STUDY_TARGET: one threshold for every task's metric (0.8), or per task
    (classify:0.8,summarize:0.3). Every task's metric (accuracy, ROUGE-L) lies in 0..1."""
    from training.tasks import TASKS

    if not raw:
        return {}
    given = {}
    for item in raw.split(","):
        task, sep, value = item.strip().rpartition(":")
        names = [task] if sep else tasks
        if sep and task not in tasks:
            raise UserError(
                f"STUDY_TARGET names {task!r}, which the study does not train (TASKS: "
                f"{', '.join(tasks)})"
            )
        try:
            threshold = float(value)
        except ValueError:
            raise UserError(f"STUDY_TARGET={raw!r}: {value!r} is not a number; e.g. 0.8") from None
        for name in names:
            metric = TASKS[name].primary_metric
            if not 0 < threshold <= 1:
                raise UserError(
                    f"STUDY_TARGET={threshold:g} is outside the range of {name}'s {metric} "
                    "(above 0, at most 1); give a threshold the metric can reach"
                )
            given[name] = threshold
    return given


def _hours(raw: str) -> float:
    """STUDY_HOURS: a time budget above 0 hours, or 0 when not given."""
    if not raw:
        return 0.0
    try:
        hours = float(raw)
    except ValueError:
        raise UserError(f"STUDY_HOURS={raw!r} is not a number of hours; e.g. 2.5") from None
    if hours <= 0:
        raise UserError(f"STUDY_HOURS must be above 0, got {hours:g}: no cell fits in it")
    return hours


@dataclass
class StudySettings:
    """`make study`'s matrix, budget, scaling mode, target and time budget."""

    tasks: list[str]
    strategies: list[str]
    workers: list[int]  # [] = 1, 2, 4 capped at the GPUs or cores
    batches: list[int]  # [] = 8,16,32 with GPUs, 16 on CPU
    epochs: int  # 0 = each task's own (or NUM_TRAIN_EPOCHS)
    samples: int  # 0 = the budget is epochs
    scaling: str  # weak | strong
    targets: dict[str, float]  # task -> threshold of its metric
    hours: float  # 0 = no budget but the lease's
    past_end: bool

    VARIABLES = (
        Variable("TASKS", "classify,fakenews,summarize", "tasks to study (TASK= alone: one)"),
        Variable("STUDY_STRATEGIES", "ddp,fsdp", "strategies to compare"),
        Variable("STUDY_WORKERS", "", "worker counts; default 1,2,4 capped at GPUs/cores"),
        Variable("STUDY_BATCH", "", "per-device batch sizes; default 8,16,32 on GPUs, 16 on CPU"),
        Variable("STUDY_EPOCHS", "", "epochs per cell; default each task's own"),
        Variable("STUDY_SAMPLES", "", "training samples per cell, instead of epochs"),
        Variable("STUDY_SCALING", "weak", "weak: same per-device batch; strong: same global batch"),
        Variable(
            "STUDY_TARGET", "", "metric threshold for time-to-target: 0.8 or classify:0.8,..."
        ),
        Variable("STUDY_HOURS", "", "time budget in hours (a lease's end applies by itself)"),
        Variable("STUDY_PAST_END", "0", "1: run the cells that do not fit the budget too"),
    )

    @classmethod
    def read(cls, environ=None, one_task: str = "") -> StudySettings:
        from training.tasks import TASKS

        env = _values(cls.VARIABLES, environ)
        if one_task and not setting("TASKS", environ):
            env["TASKS"] = one_task
        tasks = _axis("TASKS", env["TASKS"], str, tuple(sorted(TASKS)))
        epochs = _whole("STUDY_EPOCHS", env["STUDY_EPOCHS"])
        samples = _whole("STUDY_SAMPLES", env["STUDY_SAMPLES"])
        if epochs and samples:
            raise UserError("STUDY_EPOCHS and STUDY_SAMPLES are both set; give the budget once")
        scaling = env["STUDY_SCALING"].lower()
        if scaling not in ("weak", "strong"):
            raise UserError(f"STUDY_SCALING must be weak or strong, got {scaling!r}")
        workers, batches = env["STUDY_WORKERS"], env["STUDY_BATCH"]
        return cls(
            tasks=tasks,
            strategies=_axis("STUDY_STRATEGIES", env["STUDY_STRATEGIES"], str, ("ddp", "fsdp")),
            workers=_axis("STUDY_WORKERS", workers, int) if workers else [],
            batches=_axis("STUDY_BATCH", batches, int) if batches else [],
            epochs=epochs,
            samples=samples,
            scaling=scaling,
            targets=_targets(env["STUDY_TARGET"], tasks),
            hours=_hours(env["STUDY_HOURS"]),
            past_end=flag("STUDY_PAST_END", environ),
        )

    def to_record(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_record(cls, saved: dict, environ=None) -> StudySettings:
        """A study's own settings, with today's time budget and override (a resumed study may
        run on a new lease)."""
        hours = _hours(setting("STUDY_HOURS", environ))
        return cls(**{**saved, "hours": hours, "past_end": flag("STUDY_PAST_END", environ)})


@dataclass
class TuneSettings:
    """`make tune`'s search: the space file and the number of trials."""

    space: str
    samples: str  # "" = the space file's num_samples (else 10); checked with the space

    VARIABLES = (
        Variable("SPACE", "", "a YAML search-space file; default: the seed's space"),
        Variable("TUNE_SAMPLES", "", "trials; overrides the space file's num_samples"),
    )

    @classmethod
    def read(cls, environ=None) -> TuneSettings:
        env = _values(cls.VARIABLES, environ)
        return cls(space=env["SPACE"], samples=env["TUNE_SAMPLES"])


@dataclass
class Places:
    """Where a command tracks, checkpoints and reports, and which stack it talks to."""

    VARIABLES = (
        Variable(
            "MLFLOW_TRACKING_URI", "", "tracking server; default the stack's or .stack/embedded/"
        ),
        Variable(
            "CHECKPOINT_STORAGE", "", "a folder or s3://bucket/prefix; default .stack/embedded/runs"
        ),
        Variable("STACK_DIR", ".stack", "the state folder"),
        Variable("REPORTS_DIR", "reports", "where bench, study and tune write their reports"),
        Variable("CLOUD", "local", "the stack's target: local, sim or chameleon"),
        Variable("STACK_NAME", "", "the stack's name; default the cloud's"),
        Variable("DRY_RUN", "0", "1: print the resolved plan and exit, starting nothing"),
    )


LEASE_VARIABLES = (
    Variable(
        OVERRUN,
        "0",
        f"1: start even if the run outlasts the lease (it checkpoints {GUARD_MINUTES} min before)",
    ),
)


def _values(variables: tuple[Variable, ...], environ) -> dict[str, str]:
    return {v.name: setting(v.name, environ) or v.default.strip() for v in variables}


def dry_run(environ=None) -> bool:
    return flag("DRY_RUN", environ)


def job_variables() -> tuple[str, ...]:
    """The variables a stack job carries from the submitting shell: the bench, study, tune and
    lease settings (SPACE travels as a path inside the job's copy of the tree)."""
    carried = (
        *BenchSettings.VARIABLES,
        *StudySettings.VARIABLES,
        *TuneSettings.VARIABLES,
        *LEASE_VARIABLES,
    )
    return tuple(v.name for v in carried if v.name != "SPACE")


GROUPS = {
    "bench": BenchSettings.VARIABLES,
    "study": StudySettings.VARIABLES,
    "tune": TuneSettings.VARIABLES,
    "lease (Chameleon)": LEASE_VARIABLES,
    "where": Places.VARIABLES,
}
