"""Each Ansible role's molecule scenario, ansible-lint, and site.yml end to end on this host.

The molecule scenarios run against this machine (default driver, managed: false, connection
local): syntax, converge, idempotence (second converge changes nothing), verify (the service
answers, the database accepts the generated login, ...). MinIO's scenario can only check that
the role skips cleanly: no MinIO server binary can be obtained on these machines.
"""

from __future__ import annotations

import re
import stat

import pytest
from stackenv import ANSIBLE_DIR, ANSIBLE_VENV, ROLES_DIR, run, tail

ROLES = ["common", "postgresql", "minio", "mlflow", "ray"]


def test_ansible_lint_production_profile_passes():
    proc = run([str(ANSIBLE_VENV / "bin" / "ansible-lint")], cwd=ANSIBLE_DIR)
    assert proc.returncode == 0, tail(proc, 80)


@pytest.mark.parametrize("role", ROLES)
def test_molecule_scenario(role):
    proc = run(
        [str(ANSIBLE_VENV / "bin" / "molecule"), "test", "-s", "default"], cwd=ROLES_DIR / role
    )
    assert proc.returncode == 0, tail(proc, 80)
    assert re.search(r"idempotence: Executed: Successful", proc.stdout + proc.stderr), tail(proc)
    assert re.search(r"verify: Executed: Successful", proc.stdout + proc.stderr), tail(proc)


def test_site_second_run_changes_nothing(stack):
    second = stack["second"]
    assert second.returncode == 0, tail(second)
    recap = re.search(r"localhost\s*:\s*ok=\d+\s+changed=(\d+)", second.stdout)
    assert recap and recap.group(1) == "0", tail(second)


def test_site_writes_private_endpoints_file(stack):
    state = stack["state"]
    endpoints = stack["endpoints"]
    assert stat.S_IMODE((state / "endpoints.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((state / "secrets").stat().st_mode) == 0o700
    assert endpoints["mlflow_tracking_uri"] == "http://127.0.0.1:5000"
    assert endpoints["mlflow_username"] == "admin"
    assert endpoints["ray_address"] == "http://127.0.0.1:8265"
    # MinIO cannot run here: no S3 endpoint, checkpoints and artifacts on local disk.
    assert endpoints["s3_endpoint"] is None
    assert endpoints["checkpoint_storage"].startswith("/")
    for key in ("mlflow_password_file", "ray_auth_token_file"):
        path = state / "secrets" / endpoints[key].split("/")[-1]
        assert endpoints[key] == str(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Secrets are files referenced by path, never values in the endpoints file.
    text = (state / "endpoints.json").read_text()
    for secret in (state / "secrets").iterdir():
        assert secret.read_text().strip() not in text
    # And never printed by the playbook.
    for secret in (state / "secrets").iterdir():
        assert secret.read_text().strip() not in stack["first"].stdout
