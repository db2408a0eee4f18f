"""ansible-lint (production profile) over the playbooks and every role. It reads the tree and
configures nothing, so it runs beside the tests that configure this machine, not in their lane."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import ANSIBLE_VENV, REPO

LINT = ANSIBLE_VENV / "bin" / "ansible-lint"


def test_ansible_lint_production_profile_passes():
    if not LINT.exists():
        pytest.skip(f"no ansible-lint at {LINT}: `make test` installs it")
    env = {**os.environ, "PATH": f"{ANSIBLE_VENV / 'bin'}:{os.environ.get('PATH', '')}",
           "ANSIBLE_CONFIG": str(REPO / "ansible" / "ansible.cfg"), "NO_COLOR": "1"}  # fmt: skip
    proc = subprocess.run(
        [str(LINT)], cwd=REPO / "ansible", env=env, capture_output=True, text=True, timeout=1200
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, "\n".join(out.splitlines()[-80:])
