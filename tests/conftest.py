"""Shared test helpers: run the CLI as a user would, in a state folder of the test's own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Variables a developer's shell may hold that would change what the CLI does.
SCRUBBED = (
    "TASK",
    "PROFILE",
    "MODEL",
    "DATA",
    "CONFIG",
    "RESUME",
    "RUN_NAME",
    "WORKERS",
    "STRATEGY",
    "MLFLOW_TRACKING_URI",
    "CHECKPOINT_STORAGE",
    "HF_HUB_OFFLINE",
    "SPACE",
    "TUNE_SAMPLES",
    "REPORTS_DIR",
)


def cli_env(state_dir: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    env["STACK_DIR"] = str(state_dir)
    env["PYTHONUNBUFFERED"] = "1"
    env.update({k: str(v) for k, v in settings.items()})
    return env


def run_cli(state_dir: Path, *args: str, timeout: int = 600, **settings: str):
    return subprocess.run(
        [sys.executable, "-m", "training", *args],
        cwd=REPO,
        env=cli_env(state_dir, **settings),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"
