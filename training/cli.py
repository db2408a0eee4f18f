"""Command line: `python -m training train|tune|bench|study [key=value ...]` (what `make train`
and the others run).

Settings come, lowest precedence first, from the task/profile defaults, a CONFIG=<yaml> file,
upper-case environment variables (make variables: TASK=, PROFILE=, LEARNING_RATE=, ...) and
`key=value` arguments. With a stack up (`make up`), train/tune/bench/study run as a job on its
Ray cluster (`logs JOB` follows one, `cancel JOB` stops it). A user error prints one line and
exits 2; Ctrl-C exits 130."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from core import cli
from core.cli import Command
from core.errors import UserError
from core.paths import REPO_ROOT
from training import interrupts, phases  # noqa: F401  (phases: the process's start time)


def _quiet() -> None:
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # we print our own
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # not its database set-up chatter
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)


def _resolve(assignments: list[str], defaults: dict | None = None):
    """The command's whole config, the settings the user gave, and where it runs."""
    from training import runner, targets

    layers = _user_layers(assignments)
    explicit = {k: v for layer in layers for k, v in layer.items()}
    target = targets.resolve()
    if not target.stack:
        _in_training_environment()
    cfg = runner.resolve_config([defaults or {}, *layers], target)
    return cfg, explicit, target


def cmd_train(assignments: list[str]) -> int:
    from training import dryrun, runner, settings

    cfg, explicit, target = _resolve(assignments)
    dry = settings.dry_run()
    if target.stack:
        return _submit("train", cfg, explicit, target, dry)
    chosen = "PROFILE" if explicit.get("profile") else f"default for target {target.cloud}"
    print(f"profile: {cfg.profile} ({chosen}; PROFILE=smoke|local|full to change)")
    plan = runner.plan(cfg, explicit, target)
    if dry:
        resume = (
            f"continues run {plan.run_name} (MLflow run {plan.run_id})"
            if plan.run_id
            else "a new run"
        )
        dryrun.show("train", plan.cfg, target, plan.splits, plan.source, run=resume)
        return 0
    runner.run(plan)
    return 0


def _submit(command: str, cfg, explicit: dict, target, dry: bool) -> int:
    """Settings are checked here, then the command runs as a job on the stack."""
    from training import jobs
    from training.config import validate

    validate(cfg)
    space = os.environ.get("SPACE", "")
    if dry:
        jobs.show(command, explicit, target, space)
        return 0
    return jobs.submit(command, explicit, target, space)


def _user_layers(assignments: list[str]) -> list[dict]:
    """Settings the user gave, lowest precedence first: CONFIG file, environment, arguments."""
    from training import config

    file_settings = {}
    if os.environ.get("CONFIG"):
        file_settings = config.read_config_file(os.environ["CONFIG"])
    return [file_settings, config.read_environment(), config.parse_assignments(assignments)]


def cmd_bench(assignments: list[str]) -> int:
    from training import bench, settings

    # A small evaluation keeps each cell short; the metric is a snapshot after a few steps.
    cfg, explicit, target = _resolve(assignments, {"max_eval_samples": 128})
    dry = settings.dry_run()
    if target.stack:
        return _submit("bench", cfg, explicit, target, dry)
    print(f"profile: {cfg.profile}")
    plan = bench.plan(cfg, target)
    if dry:
        bench.show(plan)
        return 0
    bench.run(plan)
    return 0


def cmd_study(assignments: list[str]) -> int:
    from training import settings, study

    cfg, explicit, target = _resolve(assignments)
    dry = settings.dry_run()
    if target.stack:  # what can be checked here is, before the job is sent
        study.refuse_axes(explicit)
        settings.StudySettings.read(one_task=str(explicit.get("task") or ""))
        return _submit("study", cfg, explicit, target, dry)
    plan = study.plan(_user_layers(assignments), target)
    if dry:
        study.show(plan, *study.fit(plan), dry=True)
        return 0
    study.run(plan)
    return 0


def cmd_tune(assignments: list[str]) -> int:
    from training import dryrun, settings, tune

    cfg, explicit, target = _resolve(assignments)
    dry = settings.dry_run()
    if target.stack:
        return _submit("tune", cfg, explicit, target, dry)
    print(f"profile: {cfg.profile} (PROFILE=smoke|local|full to change)")
    chosen = settings.TuneSettings.read()
    search = tune.plan(cfg, explicit, target, space_file=chosen.space, samples=chosen.samples)
    if dry:
        spec = search.spec
        dryrun.show(
            "tune",
            search.cfg,
            target,
            search.splits,
            search.source,
            search=f"continues {search.search_id}" if search.continuing else "a new search",
            trials=f"{spec.num_samples}, ASHA on {spec.metric} ({spec.mode}), steps "
            f"{search.grace_period}..{search.max_t}",
            space="; ".join(f"{k} {d.describe()}" for k, d in spec.space.items()),
        )
        return 0
    tune.run(search)
    return 0


def _in_training_environment() -> None:
    """A run on this machine needs the training stack, which the controller's environment
    (.venv) does not hold: the command runs again, unchanged, in .venv-train, built on first
    use. A job for a stack needs none of it."""
    if importlib.util.find_spec("torch") is not None:
        return
    venv = Path(os.environ.get("TRAIN_VENV") or ".venv-train")
    venv = venv if venv.is_absolute() else REPO_ROOT / venv
    if Path(sys.prefix).resolve() == venv.resolve():
        raise UserError(
            f"{venv} lacks torch; rebuild it with `rm {venv}/.ready && make train-venv`"
        )
    if not (venv / ".ready").exists():
        print(
            f"no stack is up, so this runs here: building the training environment first "
            f"({venv.name}: torch, Ray Train, transformers; once, a few minutes)",
            flush=True,
        )
        built = subprocess.run(["make", "-s", "-C", str(REPO_ROOT), "train-venv"], check=False)
        if built.returncode != 0:
            raise UserError(
                f"building {venv} failed (pip's message above); fix it and run the command "
                "again, or `make up` a stack and run it there"
            )
    python = str(venv / "bin" / "python")
    os.execv(python, [python, "-m", "training", *sys.argv[1:]])


def cmd_job(action: str, job_id: str) -> int:
    from core import state
    from training import jobs

    up = state.stack_up(state.stack_name())
    if up is None:
        raise UserError("no stack is up, so there are no jobs; `make up` starts one")
    if not job_id:
        raise UserError(f"`make {action}` needs JOB=<id>; `make status` lists running jobs")
    endpoints = up[1]
    if action == "logs":
        return jobs.follow(job_id, endpoints)
    jobs.cancel(job_id, endpoints)
    return 0


def cmd_settings() -> int:
    from training.config import TrainConfig
    from training.settings import GROUPS

    print("# a run's settings (make variable, then key=value for ARGS= or a CONFIG file)")
    for key, value in TrainConfig().to_dict().items():
        print(f"{key.upper():32} {key}={value!r}")
    for group, variables in GROUPS.items():
        print(f"\n# {group}")
        for variable in variables:
            print(f"{variable.name:32} {variable.default!r:14} {variable.meaning}")
    return 0


def cmd_ui() -> int:
    from training import targets

    target = targets.resolve()
    if not target.embedded:
        print(f"runs are tracked by the server at {target.tracking_uri}; open it there")
        return 0
    _in_training_environment()
    store = target.state_dir / "mlflow.db"
    print(f"MLflow UI for {store} on http://127.0.0.1:5000 (Ctrl-C to stop)")
    os.execvp(
        sys.executable,
        [
            sys.executable,
            "-m",
            "mlflow",
            "ui",
            "--backend-store-uri",
            target.tracking_uri,
            "--host",
            "127.0.0.1",
            "--port",
            "5000",
        ],
    )


def _settings(command: Callable[[list[str]], int]) -> Callable[[argparse.Namespace], int]:
    return lambda args: command(args.settings)


def _plain(command: Callable[[], int]) -> Callable[[argparse.Namespace], int]:
    return lambda args: command()


def _job(action: str) -> Callable[[argparse.Namespace], int]:
    return lambda args: cmd_job(action, args.job)


COMMANDS = [
    Command("train", "fine-tune a task (settings as key=value)", _settings(cmd_train), True),
    Command(
        "tune",
        "Ray Tune search with ASHA (SPACE=<yaml> TUNE_SAMPLES=N RESUME=1; key=value as train)",
        _settings(cmd_tune),
        True,
    ),
    Command("settings", "list every setting, its make variable and default", _plain(cmd_settings)),
    Command("ui", "MLflow UI over the embedded store", _plain(cmd_ui)),
    Command(
        "bench", "DDP vs FSDP x workers x batch size, with a report", _settings(cmd_bench), True
    ),
    Command(
        "study",
        "the design's experiment: TASKS x strategies x workers x batch, planned against the lease",
        _settings(cmd_study),
        True,
    ),
    Command("logs", "follow a job on the stack", _job("logs"), job=True),
    Command("cancel", "stop a job", _job("cancel"), job=True),
]


def _before() -> None:
    _quiet()
    interrupts.install()


def main(argv: list[str] | None = None) -> int:
    return cli.main("python -m training", __doc__, COMMANDS, argv, before=_before)
