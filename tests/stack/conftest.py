"""Fixtures for the stack tests: the Ansible venv, a converged local stack, and cleanup.

These tests configure this machine itself (apt packages, system users, services under
supervisor), so they need root, as on CI. Services the tests started are stopped at the end
through supervisorctl (never by process name), and supervisord is shut down again when the
tests were the ones to start it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
ROLES_DIR = ANSIBLE_DIR / "roles"
ANSIBLE_VENV = Path(os.environ.get("ANSIBLE_VENV", REPO / ".venv-ansible"))
# Programs the roles put under supervisor on this kind of host.
STACK_PROGRAMS = ["mlflow", "ray-head", "ray-worker", "minio", "postgresql"]
# No MinIO binary can be fetched here: point the role at a path that does not exist so it
# skips cleanly instead of trying the network.
NO_MINIO = "/nonexistent/minio-binary-not-available"


def ansible_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{ANSIBLE_VENV / 'bin'}:{env.get('PATH', '')}"
    env["ANSIBLE_ROLES_PATH"] = str(ROLES_DIR)
    env["ANSIBLE_CONFIG"] = str(ANSIBLE_DIR / "ansible.cfg")
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["NO_COLOR"] = "1"
    env["PY_COLORS"] = "0"
    env["PYTEST_ADDOPTS"] = "-p no:pytest-ansible"
    env.pop("STACK_STATE_DIR", None)
    return env


def run(cmd: list[str], cwd: Path = REPO, timeout: int = 1200, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, cwd=cwd, env=kw.pop("env", ansible_env()), text=True, capture_output=True,
        stdin=subprocess.DEVNULL, timeout=timeout, **kw,
    )


def tail(proc: subprocess.CompletedProcess, n: int = 60) -> str:
    return "\n".join((proc.stdout + proc.stderr).splitlines()[-n:])


def supervisor_status() -> dict[str, str] | None:
    """Program -> state, or None when supervisord is not running."""
    if shutil.which("supervisorctl") is None:
        return None
    pid = subprocess.run(["supervisorctl", "pid"], capture_output=True, text=True)
    if pid.returncode != 0 or not pid.stdout.strip().isdigit():
        return None
    out = subprocess.run(["supervisorctl", "status"], capture_output=True, text=True).stdout
    return {line.split()[0]: line.split()[1] for line in out.splitlines() if line.strip()}


@pytest.fixture(scope="session", autouse=True)
def _requirements_and_cleanup():
    if os.geteuid() != 0:
        pytest.skip("stack tests configure this machine (apt, users, services): run them as root")
    if not (ANSIBLE_VENV / "bin" / "ansible-playbook").exists():
        pytest.skip(
            f"no Ansible venv at {ANSIBLE_VENV}: python3 -m venv .venv-ansible && "
            ".venv-ansible/bin/pip install -r ansible/requirements.txt"
        )
    before = supervisor_status()
    yield
    after = supervisor_status()
    if after is None:
        return
    for program in STACK_PROGRAMS:
        was_running = before is not None and before.get(program) == "RUNNING"
        if program in after and not was_running:
            subprocess.run(["supervisorctl", "stop", program], capture_output=True, timeout=120)
    if before is None:
        subprocess.run(["supervisorctl", "shutdown"], capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> dict:
    """The whole stack converged on this machine by site.yml with the local inventory."""
    state = tmp_path_factory.mktemp("stack-state")
    cmd = [
        str(ANSIBLE_VENV / "bin" / "ansible-playbook"),
        "-i", str(ANSIBLE_DIR / "inventories" / "local" / "hosts.yml"),
        str(ANSIBLE_DIR / "site.yml"),
        "-e", f"stack_state_dir={state}",
        "-e", f"minio_download_url={NO_MINIO}",
    ]
    first = run(cmd)
    assert first.returncode == 0, tail(first)
    endpoints = json.loads((state / "endpoints.json").read_text())
    return {"state": state, "cmd": cmd, "first": first, "endpoints": endpoints}
