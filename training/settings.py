"""The settings besides a run's own (TrainConfig): the benchmark's axes, the search's space
and size, and where things go. Each is typed, read from its environment variable (the make
variable of the same name), listed by `make settings`, and checked before anything starts."""

from __future__ import annotations

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
        Variable("REPORTS_DIR", "reports", "where bench and tune write their reports"),
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
    """The variables a stack job carries from the submitting shell: the bench, tune and lease
    settings (SPACE travels as a path inside the job's copy of the tree)."""
    carried = (*BenchSettings.VARIABLES, *TuneSettings.VARIABLES, *LEASE_VARIABLES)
    return tuple(v.name for v in carried if v.name != "SPACE")


GROUPS = {
    "bench": BenchSettings.VARIABLES,
    "tune": TuneSettings.VARIABLES,
    "lease (Chameleon)": LEASE_VARIABLES,
    "where": Places.VARIABLES,
}
