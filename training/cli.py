"""Command line: `python -m training train|tune [key=value ...]` (what `make train`/`tune` run).

Settings come, lowest precedence first, from the task/profile defaults, a CONFIG=<yaml> file,
upper-case environment variables (make variables: TASK=, PROFILE=, LEARNING_RATE=, ...) and
`key=value` arguments. A user error prints one line and exits 2."""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from training.errors import UserError

EXIT_USER_ERROR = 2


def _quiet() -> None:
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)


def cmd_train(assignments: list[str]) -> int:
    from training import config, runner, targets

    explicit: dict = {}
    file_settings = {}
    if os.environ.get("CONFIG"):
        file_settings = config.read_config_file(os.environ["CONFIG"])
    env_settings = config.read_environment()
    cli_settings = config.parse_assignments(assignments)
    for layer in (file_settings, env_settings, cli_settings):
        explicit.update(layer)
    target = targets.resolve()
    cfg = runner.resolve_config([file_settings, env_settings, cli_settings], target)
    chosen = "PROFILE" if explicit.get("profile") else f"default for target {target.name}"
    print(f"profile: {cfg.profile} ({chosen}; PROFILE=smoke|local|full to change)")
    plan = runner.plan(cfg, explicit, target)
    runner.run(plan)
    return 0


def cmd_tune(assignments: list[str]) -> int:
    from training import config, runner, targets, tune

    file_settings = {}
    if os.environ.get("CONFIG"):
        file_settings = config.read_config_file(os.environ["CONFIG"])
    layers = [file_settings, config.read_environment(), config.parse_assignments(assignments)]
    explicit: dict = {}
    for layer in layers:
        explicit.update(layer)
    target = targets.resolve()
    cfg = runner.resolve_config(layers, target)
    print(f"profile: {cfg.profile} (PROFILE=smoke|local|full to change)")
    search = tune.plan(
        cfg,
        explicit,
        target,
        space_file=os.environ.get("SPACE", ""),
        samples=os.environ.get("TUNE_SAMPLES", ""),
    )
    tune.run(search)
    return 0


def cmd_settings() -> int:
    from training.config import TrainConfig

    for key, value in TrainConfig().to_dict().items():
        print(f"{key.upper():32} {key}={value!r}")
    return 0


def cmd_ui() -> int:
    from training import targets

    target = targets.resolve()
    if not target.embedded:
        print(f"runs are tracked by the server at {target.tracking_uri}; open it there")
        return 0
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="fine-tune a task (settings as key=value)")
    train.add_argument("settings", nargs="*", metavar="key=value")
    tune = sub.add_parser(
        "tune",
        help="Ray Tune search with ASHA (SPACE=<yaml> TUNE_SAMPLES=N RESUME=1; key=value as train)",
    )
    tune.add_argument("settings", nargs="*", metavar="key=value")
    sub.add_parser("settings", help="list every setting, its make variable and default")
    sub.add_parser("ui", help="MLflow UI over the embedded store")
    args = parser.parse_args(argv)
    _quiet()
    try:
        if args.command == "train":
            return cmd_train(args.settings)
        if args.command == "tune":
            return cmd_tune(args.settings)
        if args.command == "ui":
            return cmd_ui()
        return cmd_settings()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
