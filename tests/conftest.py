"""Shared test helpers: run the CLI as a user would, in a state folder of the test's own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ANSIBLE_VENV = Path(os.environ.get("ANSIBLE_VENV") or REPO / ".venv-ansible")

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
    "MLFLOW_REGISTRY_URI",  # also exported by mlflow.set_registry_uri in the test process
    "CHECKPOINT_STORAGE",
    "HF_HUB_OFFLINE",
    "SPACE",
    "TUNE_SAMPLES",
    "REPORTS_DIR",
    "CLOUD",
    "STACK_NAME",
    "PURGE",
    "CONFIRM",
    "DRY_RUN",
    "MLFLOW_S3_ENDPOINT_URL",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)


def cli_env(state_dir: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED and not k.startswith("BENCH_")}
    env["STACK_DIR"] = str(state_dir)
    # Which stack this machine's local services belong to: the test's own record, beside its
    # state folder, so tests with stacks of their own do not see each other's.
    env["CHAMELEON_MLOPS_MACHINE_DIR"] = str(state_dir.parent / "machine")
    env["PYTHONUNBUFFERED"] = "1"
    env.update({k: str(v) for k, v in settings.items()})
    return env


def run_cli(
    state_dir: Path, *args: str, timeout: int = 600, module: str = "training", **settings: str
):
    """`python -m training ...` (or `-m stack`) as a user runs it; settings are env vars."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=cli_env(state_dir, **settings),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# What configures this machine: tests/stack (its services, users and host firewall) and
# tests/sim (hosts that share its /usr and /opt, namespaces a snapshot compares against).
THIS_MACHINE = ("tests/stack/", "tests/sim/")


def pytest_xdist_make_scheduler(config, log):
    """`make test`'s workers (pytest-xdist): the tests that configure this machine run on one
    worker in collection order; every other module is a unit of its own (its module fixtures
    made once), taken by whichever worker is free. The biggest unit, this machine's, goes first."""
    from xdist.scheduler import LoadScopeScheduling

    class ThisMachineInOneLane(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "this machine" if module.startswith(THIS_MACHINE) else module

    return ThisMachineInOneLane(config, log)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


def session_processes(sid: int) -> list[str]:
    out = subprocess.run(["ps", "-eo", "sid=,pid="], capture_output=True, text=True).stdout
    return [line.split()[1] for line in out.splitlines() if line.split()[0] == str(sid)]


def kill_when(state_dir: Path, args: list[str], ready, what: str, **settings: str) -> None:
    """Run the CLI with `args`, SIGKILL it as soon as `ready()` holds, and wait until every
    process it started is gone."""
    # Its own session, so the kill reaches the run and every process it started, and no other.
    proc = subprocess.Popen(
        [sys.executable, "-m", "training", *args],
        cwd=REPO,
        env=cli_env(state_dir, **settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while not ready() and proc.poll() is None:
        assert time.monotonic() < deadline, f"no {what} within 5 minutes"
        time.sleep(0.1)
    assert proc.poll() is None, f"the run ended before it could be killed after its {what}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    while session_processes(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.5)  # Ray's workers exit once their raylet is gone
    assert not session_processes(proc.pid)


def kill_after_first_checkpoint(
    state_dir: Path, run_name: str, args: list[str], **settings: str
) -> int:
    """Start a training run, SIGKILL it once Ray has committed a checkpoint, and return the
    step of the checkpoint a resume will start from."""
    snapshot = state_dir / "embedded" / "runs" / run_name / "checkpoint_manager_snapshot.json"
    kill_when(
        state_dir,
        ["train", f"run_name={run_name}", *args],
        snapshot.exists,
        "checkpoint",
        **settings,
    )
    # Ray's snapshot names the last checkpoint it committed: that is where a resume starts.
    return json.loads(snapshot.read_text())["latest_checkpoint_result"]["metrics"]["step"]


def save_smoke_model(task, train, seed: int, labels: list[str], folder: Path, seq_len: int = 0):
    """A smoke model saved as a model folder, as a user's own MODEL= would be."""
    from training.models import build_smoke

    tokenizer, model = build_smoke(task, train, seed, labels, seq_len=seq_len)
    tokenizer.save_pretrained(folder)
    model.save_pretrained(folder)
    return folder


def service_rows(output: str) -> dict[str, list[str]]:
    """The services table `make up` and `make status` print: service -> its cells (health,
    address, detail, log)."""
    rows = {}
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
        if len(cells) == 5 and cells[1] in ("ok", "failing"):
            rows[cells[0]] = cells[1:]
    return rows
