"""Paths, the Ansible environment and subprocess helpers shared by the stack tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
ROLES_DIR = ANSIBLE_DIR / "roles"
ANSIBLE_VENV = Path(os.environ.get("ANSIBLE_VENV", REPO / ".venv-ansible"))
# Programs the roles put under supervisor on this kind of host.
STACK_PROGRAMS = ["mlflow", "ray-head", "ray-worker", "seaweedfs", "postgresql"]
# nftables tables the roles load: the host firewall (common) and SeaweedFS's internals.
STACK_TABLES = ["stack_firewall", "seaweedfs_internals"]
# No registry ships SeaweedFS: tools/seaweedfs/build.sh builds `weed` from source into this
# cache (CI runs it first), and the seaweedfs role installs that file.
WEED = os.environ.get("SEAWEEDFS_DOWNLOAD_URL") or "/var/cache/chameleon-mlops/bin/weed"


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
    env["SEAWEEDFS_DOWNLOAD_URL"] = WEED
    return env


def run(cmd: list[str], cwd: Path = REPO, timeout: int = 1200, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd,
        cwd=cwd,
        env=kw.pop("env", ansible_env()),
        text=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        **kw,
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


def nft_tables() -> set[str]:
    """The inet tables loaded in this network namespace (empty without nft)."""
    if shutil.which("nft") is None:
        return set()
    out = subprocess.run(["nft", "list", "tables", "inet"], capture_output=True, text=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.startswith("table inet ")}


# The user's Hugging Face token as the stack tests set it for `make up`: onto the nodes, never
# into a job's submitted environment.
HF_TOKEN = "hf_stacktest0000000000000000000000"


def make_env(stack_dir: Path) -> dict[str, str]:
    from tests.conftest import SCRUBBED

    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    env.update(STACK_DIR=str(stack_dir), SEAWEEDFS_DOWNLOAD_URL=WEED, PYTHONUNBUFFERED="1")
    env["HF_TOKEN"] = HF_TOKEN
    return env


def make(stack_dir: Path, *args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    """`make <args>` from the repository as a user types it, with the stack in `stack_dir`."""
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=REPO,
        env=make_env(stack_dir),
        text=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )
