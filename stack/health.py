"""Health of each service of a stack, checked from this machine through its endpoints file:
what `make status` shows and what `make up` waits for."""

from __future__ import annotations

import base64
import json
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from core.state import Endpoints


@dataclass
class Check:
    service: str
    healthy: bool
    url: str
    detail: str
    log: str


def secret(path: str | None) -> str:
    return Path(path).read_text().strip() if path else ""


def _get(url: str, headers: dict | None = None, timeout: float = 5) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, ""
    except (urllib.error.URLError, OSError) as err:
        return 0, str(getattr(err, "reason", err))


def postgresql(endpoints: Endpoints) -> Check:
    host, port = endpoints.postgresql_address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=3):
            ok, detail = True, "accepting connections"
    except OSError as err:
        ok, detail = False, f"no connection ({err.strerror or err})"
    return Check("PostgreSQL", ok, f"{host}:{port}", detail, _log(endpoints, "postgresql"))


def mlflow(endpoints: Endpoints) -> Check:
    uri = endpoints.mlflow_tracking_uri.rstrip("/")
    log = _log(endpoints, "mlflow")
    status, _ = _get(f"{uri}/health")
    if status != 200:
        return Check("MLflow", False, uri, f"/health answered {status or 'nothing'}", log)
    login = f"{endpoints.mlflow_username}:{secret(endpoints.mlflow_password_file)}"
    auth = {"Authorization": "Basic " + base64.b64encode(login.encode()).decode()}
    search = f"{uri}/api/2.0/mlflow/experiments/search?max_results=1000"
    status, body = _get(search, auth)
    if status != 200:
        return Check("MLflow", False, uri, f"the stack's login was refused ({status})", log)
    experiments = len(json.loads(body).get("experiments", []))
    return Check("MLflow", True, uri, f"basic auth on, {experiments} experiment(s)", log)


def ray(endpoints: Endpoints) -> Check:
    address = endpoints.ray_address.rstrip("/")
    log = _log(endpoints, "ray")
    token = {"Authorization": f"Bearer {secret(endpoints.ray_auth_token_file)}"}
    status, body = _get(f"{address}/api/version", token)
    if status != 200:
        return Check("Ray", False, address, f"dashboard answered {status or 'nothing'}", log)
    version = json.loads(body).get("ray_version", "?")
    status, body = _get(f"{address}/api/jobs/", token)
    jobs = json.loads(body) if status == 200 else []
    running = [j["submission_id"] for j in jobs if j.get("status") in ("PENDING", "RUNNING")]
    detail = f"Ray {version}, token auth on, {len(running)} job(s) running"
    if running:
        detail += ": " + ", ".join(running)
    return Check("Ray", True, address, detail, log)


def ray_nodes(endpoints: Endpoints) -> list[dict]:
    """Ray's nodes as its state API lists them (address, state, head or not, resources);
    empty when the dashboard does not answer."""
    address = endpoints.ray_address.rstrip("/")
    token = {"Authorization": f"Bearer {secret(endpoints.ray_auth_token_file)}"}
    status, body = _get(f"{address}/api/v0/nodes?detail=1&limit=1000", token, timeout=15)
    try:
        found = json.loads(body) if status == 200 else {}
        return found.get("data", {}).get("result", {}).get("result", [])
    except (ValueError, AttributeError):  # not Ray's answer
        return []


OBJECT_STORE_NAMES = {"seaweedfs": "SeaweedFS", "external": "S3 (external)"}


def object_store(endpoints: Endpoints) -> Check:
    """The object store that runs: it answers, and the training keys reach the checkpoints
    bucket (what every job needs)."""
    url = endpoints.s3_endpoint.rstrip("/")
    service = OBJECT_STORE_NAMES.get(endpoints.object_store, "S3")
    log = _log(endpoints, "object_store")
    if endpoints.object_store == "seaweedfs":
        status, _ = _get(f"{url}/healthz")
        if status != 200:
            return Check(service, False, url, f"/healthz answered {status or 'nothing'}", log)
    bucket = endpoints.s3_buckets.get("checkpoints", "")
    try:
        _head_bucket(url, endpoints.s3_access_key_id, secret(endpoints.s3_secret_key_file), bucket)
    except Exception as err:  # noqa: BLE001 - any failure is what the check reports
        return Check(
            service, False, url, f"bucket {bucket}: {type(err).__name__}: {err}"[:120], log
        )
    return Check(service, True, url, f"training keys reach {bucket}", log)


def _head_bucket(url: str, access_key: str, secret_key: str, bucket: str) -> None:
    import boto3  # only `make status`/`make up` need it, and boto3's import is slow
    from botocore.client import Config

    config = Config(connect_timeout=3, read_timeout=5, retries={"max_attempts": 1})
    boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=config,
    ).head_bucket(Bucket=bucket)


def remote_checks(endpoints: Endpoints) -> list[Check]:
    """The services a client reaches (PostgreSQL is the services host's own)."""
    checks = [mlflow(endpoints), ray(endpoints)]
    if endpoints.s3_endpoint:
        checks.append(object_store(endpoints))
    return checks


def check_all(endpoints: Endpoints) -> list[Check]:
    return [postgresql(endpoints), *remote_checks(endpoints)]


def wait_healthy(endpoints: Endpoints, timeout: float = 90) -> list[Check]:
    """Poll until every service is healthy or the time is up; returns the last checks."""
    deadline = time.monotonic() + timeout
    while True:
        checks = check_all(endpoints)
        if all(c.healthy for c in checks) or time.monotonic() > deadline:
            return checks
        time.sleep(3)


def _log(endpoints: Endpoints, service: str) -> str:
    return endpoints.log(service)
