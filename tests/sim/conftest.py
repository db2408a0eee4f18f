"""Fixtures for the CLOUD=sim tests: a sim stack made by `python -m stack up` as a user runs it,
in a state folder of the tests' own, and a snapshot of this machine to compare `down` against.

They need root (network namespaces, mounts), Debian's openssh-server, nftables and iproute2,
and the Ansible venv; otherwise they are skipped, saying which is missing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import ANSIBLE_VENV, run_cli

TOOLS = {"ip": "iproute2", "sshd": "openssh-server", "nft": "nftables", "nsenter": "util-linux"}


def pytest_collection_modifyitems(items):
    reason = _missing()
    if reason:
        for item in items:
            if "tests/sim/" in str(item.fspath):
                item.add_marker(pytest.mark.skip(reason=reason))


def _missing() -> str:
    if os.geteuid() != 0:
        return "CLOUD=sim tests make network namespaces and mounts: run them as root"
    missing = sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})
    if missing:
        return f"CLOUD=sim tests need {' '.join(missing)}: apt-get install {' '.join(missing)}"
    if not (ANSIBLE_VENV / "bin" / "ansible").exists():
        return f"no Ansible venv at {ANSIBLE_VENV}: run `make ansible-venv`"
    return ""


def sim_cli(state_dir: Path, *args: str, **settings: str):
    return run_cli(state_dir, *args, timeout=300, module="stack", CLOUD="sim", **settings)


@pytest.fixture(scope="module")
def sim_state(tmp_path_factory) -> Path:
    # Under /tmp on purpose: the hosts mount a private /tmp over the folder their state is in.
    return tmp_path_factory.mktemp("sim") / "state"
