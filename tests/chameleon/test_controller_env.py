"""The controller's environment alone (issue: a laptop leases in a minute): as `make venv`
builds it (requirements.txt as constraints, the package with its `controller` extra), it holds
no training stack, and from it `make up CLOUD=chameleon DRY_RUN=1`, `make up`, `make status`,
`make train DRY_RUN=1` and a real job submission work against the Chameleon stand-in. Prints
the environment's size and build time."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.chameleon.conftest import (
    REPO,
    clouds_yaml,
    made_stack,
    one_error_line,
    stack_cli,
    training_cli,
    with_stubs,
)

TRAINING_STACK = ("torch", "transformers", "datasets", "ray", "sklearn", "pyarrow")


def size_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


@pytest.fixture(scope="module")
def controller(tmp_path_factory) -> str:
    """The repository's .venv where `make venv` built it from today's pins (CI does), else one
    built here the same way."""
    made = REPO / ".venv" / ".ready"
    sources = [REPO / "requirements.txt", REPO / "pyproject.toml"]
    if made.exists() and all(made.stat().st_mtime > f.stat().st_mtime for f in sources):
        folder = REPO / ".venv"
    else:
        folder = tmp_path_factory.mktemp("controller") / "venv"
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
        pip = [str(folder / "bin" / "pip"), "install", "-q"]
        subprocess.run([*pip, "-c", str(REPO / "requirements.txt"), f"{REPO}[controller]"],
                       check=True, cwd=folder.parent)  # fmt: skip
        print(f"built in {time.monotonic() - started:.0f} s")
    print(f"controller environment {folder}: {size_mib(folder):.0f} MiB")
    return str(folder / "bin" / "python")


def test_it_holds_no_training_stack(controller):
    for module in TRAINING_STACK:
        found = subprocess.run([controller, "-c", f"import {module}"], capture_output=True)
        assert found.returncode != 0, f"{module} is importable in the controller environment"


def test_it_leases_configures_and_submits_a_job(controller, standin, home, tmp_path, stubs):
    path = clouds_yaml(tmp_path / "clouds.yaml", standin.url)
    settings = with_stubs(stubs, OS_CLIENT_CONFIG_FILE=str(path))
    dry = stack_cli(home, tmp_path / "dry", "up", python=controller, DRY_RUN="1", **settings)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "DRY_RUN=1: nothing is created or written" in dry.stdout, dry.stdout

    state, settings = made_stack(standin, home, tmp_path, stubs, python=controller)
    status = stack_cli(home, state, "status", python=controller, **settings)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "KVM@TACC" in status.stdout, status.stdout

    plan = training_cli(home, state, "train", python=controller, TASK="classify", DRY_RUN="1",
                        **settings)  # fmt: skip
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "would submit job train-classify-" in plan.stdout, plan.stdout

    ran = training_cli(home, state, "train", python=controller, TASK="classify", **settings)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    (job,) = [json.loads(line) for line in Path(settings["STUB_JOBS_LOG"]).read_text().splitlines()]
    assert job["entrypoint"].startswith("python -m training train task=classify"), job

    # What the controller can check, it checks, in one line, before anything is sent.
    bad = training_cli(home, state, "train", python=controller, TASK="classify",
                       LEARNING_RATE="fast", **settings)  # fmt: skip
    assert "LEARNING_RATE" in one_error_line(bad).upper()


def test_a_run_here_goes_on_in_the_training_environment(controller, home, tmp_path):
    """With no stack up, `make train` from the controller's environment runs again in the
    training one (here, the suite's own environment, as TRAIN_VENV names it)."""
    if not (Path(sys.prefix) / ".ready").exists():
        pytest.skip("the suite's environment was not built by make (no .ready)")
    plan = training_cli(home, tmp_path / "state", "train", python=controller, CLOUD="local",
                        TASK="classify", DRY_RUN="1", TRAIN_VENV=sys.prefix)  # fmt: skip
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "profile: smoke" in plan.stdout, plan.stdout
    assert "building the training environment" not in plan.stdout  # it was there already
