"""The escape suite on the converged local stack: a real Ray job, submitted to the stack's Jobs
API with the token as `make train` does, runs escape_job.py as the job's user with the
environment every job gets, and tries every way around its own credentials (SeaweedFS's filer,
volume server, master and S3 gRPC, over TCP and over their Unix sockets, its key files;
PostgreSQL; MLflow's admin API with the training login; other buckets with the training key;
Ray's GCS, client server, dashboard and agent without the token). Each must fail, while the
front doors (S3 with the training key on its bucket, MLflow with the training login) still
open. Before the job, root reaches each target here, so a refusal is the wall's, not a dead
port; after it, the data and logins are as they were."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from escape import MIN_ATTEMPTS, MINTED, job_settings, outcomes, ports, report, run_job

SENTINEL = "escape-sentinel/kept.txt"


def node_address(port: int) -> str:
    """The address Ray's node listens on besides loopback (its dashboard agent binds it)."""
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True)
    addresses = [line.split()[3].rsplit(":", 1)[0] for line in out.stdout.splitlines()]
    named = [a for a in addresses if a not in ("127.0.0.1", "[::1]", "*", "0.0.0.0", "[::]")]
    assert named, f"{port} listens on {addresses}, no node address among them"
    return named[0]


def host_of(url: str) -> str:
    return url.split("//")[1].rsplit(":", 1)[0]


def s3_client(endpoint: str, keys: tuple[str, str]):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=keys[0],
        aws_secret_access_key=keys[1],
        region_name="us-east-1",
    )


def secret(state: Path, name: str) -> str:
    return (state / "secrets" / name).read_text().strip()


def mlflow_admin(endpoints: dict, state: Path, path: str) -> tuple[int, dict]:
    login = f"admin:{secret(state, 'mlflow_admin_password')}".encode()
    request = urllib.request.Request(
        f"{endpoints['mlflow_tracking_uri']}/api/2.0/mlflow/{path}",
        headers={"Authorization": "Basic " + base64.b64encode(login).decode()},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, {}


def test_a_job_cannot_step_around_its_own_credentials(stack, tmp_path, monkeypatch):
    endpoints, state = stack["endpoints"], stack["state"]
    settings = job_settings(
        endpoints,
        node_ip=node_address(ports()["ray_dashboard_agent_http"]),
        dashboard_host=host_of(endpoints["ray_address"]),
        s3_host=host_of(endpoints["s3_endpoint"]),
    )
    # Root reaches every target here: a refusal in the job is the wall's, not a dead service.
    for name, port in settings["ports"].items():
        host = {"ray_dashboard": settings["dashboard_host"]}.get(
            name, settings["node_ip"] if name.startswith("ray_") else "127.0.0.1"
        )
        with socket.create_connection((host, port), timeout=5):
            pass
    for name, path in settings["paths"].items():
        assert Path(path).exists(), f"{name}: {path} is not there to try"
    artifacts = endpoints["s3_buckets"]["artifacts"]
    admin = s3_client(
        endpoints["s3_endpoint"], ("stack-admin", secret(state, "seaweedfs_admin_secret_key"))
    )
    mlflow_keys = ("stack-mlflow", secret(state, "seaweedfs_mlflow_secret_key"))
    s3_client(endpoints["s3_endpoint"], mlflow_keys).put_object(
        Bucket=artifacts, Key=SENTINEL, Body=b"kept"
    )
    buckets_before = {b["Name"] for b in admin.list_buckets()["Buckets"]}

    attempts, doors = outcomes(run_job(endpoints, settings, tmp_path, monkeypatch))
    report(attempts, doors, "local")
    assert len(attempts) >= MIN_ATTEMPTS
    assert [a["name"] for a in attempts if not a["blocked"]] == []
    assert doors and all(d["open"] for d in doors), doors

    # Nothing the attempts aimed at changed: the data, the buckets, the keys and the logins.
    assert admin.get_object(Bucket=artifacts, Key=SENTINEL)["Body"].read() == b"kept"
    assert {b["Name"] for b in admin.list_buckets()["Buckets"]} == buckets_before
    with pytest.raises(ClientError):
        s3_client(endpoints["s3_endpoint"], MINTED).list_buckets()
    assert mlflow_admin(endpoints, state, "users/get?username=escapee")[0] == 404
    status, body = mlflow_admin(endpoints, state, "users/get?username=training")
    assert status == 200 and body["user"]["is_admin"] is False
    admin.delete_object(Bucket=artifacts, Key=SENTINEL)
