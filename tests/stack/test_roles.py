"""Each Ansible role's molecule scenario, and site.yml end to end on this host (ansible-lint:
tests/test_ansible_lint.py).

The molecule scenarios run against this machine (default driver, managed: false, connection
local): syntax, converge, idempotence (second converge changes nothing), verify (the service
answers, the database accepts the generated login, each S3 identity reaches only its buckets,
...). SeaweedFS runs for real from the `weed` tools/seaweedfs/build.sh built from source; its
download_failure scenario checks that a failed download stops the role with one message.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
from stackenv import ANSIBLE_VENV, ROLES_DIR, run, tail

ROLES = ["common", "data_volume", "object_store_check", "postgresql", "seaweedfs", "mlflow", "ray"]


@pytest.mark.parametrize("role", ROLES)
def test_molecule_scenario(role):
    # Molecule keeps a scenario's folder (its state/secrets) between runs: start from none, as a
    # fresh clone would.
    run([str(ANSIBLE_VENV / "bin" / "molecule"), "reset", "-s", "default"], cwd=ROLES_DIR / role)
    proc = run(
        [str(ANSIBLE_VENV / "bin" / "molecule"), "test", "-s", "default"], cwd=ROLES_DIR / role
    )
    assert proc.returncode == 0, tail(proc, 80)
    assert re.search(r"idempotence: Executed: Successful", proc.stdout + proc.stderr), tail(proc)
    assert re.search(r"verify: Executed: Successful", proc.stdout + proc.stderr), tail(proc)


def test_seaweedfs_download_failure_is_one_message():
    proc = run(
        [str(ANSIBLE_VENV / "bin" / "molecule"), "test", "-s", "download_failure"],
        cwd=ROLES_DIR / "seaweedfs",
    )
    assert proc.returncode == 0, tail(proc, 80)
    assert "The failure is the role's one message" in proc.stdout, tail(proc)


def test_site_second_run_changes_nothing(stack):
    second = stack["second"]
    assert second.returncode == 0, tail(second)
    log = sorted((stack["state"] / "logs").glob("up-*.log"))[-1]  # the second make up's
    recap = re.search(r"localhost\s*:\s*ok=\d+\s+changed=(\d+)", log.read_text())
    assert recap and recap.group(1) == "0", log.read_text()[-3000:]


def test_site_writes_private_endpoints_file(stack):
    state = stack["state"]
    endpoints = stack["endpoints"]
    assert stat.S_IMODE((state / "endpoints.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((state / "secrets").stat().st_mode) == 0o700
    assert endpoints["mlflow_tracking_uri"] == "http://127.0.0.1:5000"
    # Jobs log in as `training`, not the admin; the S3 keys are the training identity's.
    assert endpoints["mlflow_username"] == "admin"
    assert endpoints["mlflow_training_username"] == "training"
    assert endpoints["ray_address"] == "http://127.0.0.1:8265"
    assert endpoints["object_store"] == "seaweedfs"
    assert endpoints["s3_endpoint"] == "http://127.0.0.1:8333"
    assert endpoints["s3_access_key_id"] == "stack-training"
    assert endpoints["checkpoint_storage"] == "s3://ray-checkpoints/checkpoints"
    assert endpoints["mlflow_artifact_location"] == "s3://mlflow-artifacts/artifacts"
    for key in (
        "mlflow_password_file",
        "mlflow_training_password_file",
        "ray_auth_token_file",
        "s3_secret_key_file",
    ):
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


def test_ray_nodes_hold_only_the_training_credentials(stack):
    """What every job inherits: the training MLflow user and S3 keys, no admin secret."""
    environment = Path("/etc/ray/environment").read_text()
    secrets = stack["state"] / "secrets"
    for held in ("mlflow_training_password", "seaweedfs_training_secret_key"):
        assert (secrets / held).read_text().strip() in environment, held
    for kept_away in (
        "mlflow_admin_password",
        "seaweedfs_admin_secret_key",
        "seaweedfs_mlflow_secret_key",
    ):
        assert (secrets / kept_away).read_text().strip() not in environment, kept_away
    assert "AWS_ACCESS_KEY_ID=stack-training" in environment


def test_site_object_store_gives_each_identity_its_buckets_only(stack):
    proc = run(
        [
            str(ANSIBLE_VENV / "bin" / "python"),
            str(ROLES_DIR / "seaweedfs" / "molecule" / "default" / "s3_access.py"),
            stack["endpoints"]["s3_endpoint"],
            "/etc/seaweedfs/s3.json",
        ]
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok   training put refused on mlflow-artifacts" in proc.stdout
    assert "ok   mlflow put refused on ray-checkpoints" in proc.stdout


def test_the_firewall_admits_the_ports_ray_is_started_on():
    """A Ray port the firewall does not list is dropped between hosts: the cluster splits."""
    import yaml

    common = yaml.safe_load((ROLES_DIR / "common" / "defaults" / "main.yml").read_text())
    ray = yaml.safe_load((ROLES_DIR / "ray" / "defaults" / "main.yml").read_text())
    started = {
        "gcs": ray["ray_gcs_port"],
        "dashboard": ray["ray_dashboard_port"],
        "client_server": ray["ray_client_server_port"],
        "dashboard_agent_http": ray["ray_dashboard_agent_listen_port"],
        "worker_min": ray["ray_min_worker_port"],
        "worker_max": ray["ray_max_worker_port"],
        **{
            name: ray[f"ray_{name}_port"]
            for name in (
                "node_manager",
                "object_manager",
                "metrics_export",
                "dashboard_agent_grpc",
                "runtime_env_agent",
                "autoscaler_metrics",
                "dashboard_metrics",
            )
        },
    }
    assert common["stack_ray_ports"] == started
