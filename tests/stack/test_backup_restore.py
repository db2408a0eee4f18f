"""mlflow-stack/backup.sh and restore.sh against the real PostgreSQL, SeaweedFS and MLflow of
the stack.

A run created through MLflow's API (with a metric and an artifact, stored in the artifacts
bucket) survives backup -> drop both databases and delete the artifacts' objects -> restore.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from stackenv import REPO, tail

BACKUP = REPO / "mlflow-stack" / "backup.sh"
RESTORE = REPO / "mlflow-stack" / "restore.sh"


class MLflow:
    def __init__(self, endpoints: dict, state: Path):
        self.url = endpoints["mlflow_tracking_uri"]
        password = (
            (state / "secrets" / Path(endpoints["mlflow_password_file"]).name).read_text().strip()
        )
        token = base64.b64encode(f"{endpoints['mlflow_username']}:{password}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}"}

    def call(self, method: str, path: str, body: dict | bytes | None = None, raw: bool = False):
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        headers = dict(self.headers)
        if isinstance(body, dict):
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=120) as resp:
            content = resp.read()
        return content if raw else json.loads(content or b"{}")

    def wait_healthy(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"MLflow at {self.url} not healthy after {timeout} s")
            time.sleep(2)


def supervisorctl(*args: str) -> None:
    proc = subprocess.run(["supervisorctl", *args], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def sh(*cmd: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        list(cmd), capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300
    )
    assert proc.returncode == 0, tail(proc)
    return proc


def delete_artifacts(stack) -> None:
    import boto3

    endpoints = stack["endpoints"]
    bucket, prefix = endpoints["mlflow_artifact_location"].removeprefix("s3://").split("/", 1)
    admin = (stack["state"] / "secrets" / "seaweedfs_admin_secret_key").read_text().strip()
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoints["s3_endpoint"],
        aws_access_key_id="stack-admin",
        aws_secret_access_key=admin,
        region_name="us-east-1",
    )
    for item in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
        s3.delete_object(Bucket=bucket, Key=item["Key"])
    assert s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["KeyCount"] == 0


def test_run_survives_backup_drop_restore(stack, tmp_path):
    mlflow = MLflow(stack["endpoints"], stack["state"])
    mlflow.wait_healthy()
    name = f"backup-restore-{int(time.time())}"
    exp_id = mlflow.call("POST", "/api/2.0/mlflow/experiments/create", {"name": name})[
        "experiment_id"
    ]
    run = mlflow.call(
        "POST", "/api/2.0/mlflow/runs/create", {"experiment_id": exp_id, "run_name": "kept"}
    )
    run_id = run["run"]["info"]["run_id"]
    mlflow.call(
        "POST",
        "/api/2.0/mlflow/runs/log-metric",
        {"run_id": run_id, "key": "accuracy", "value": 0.93, "timestamp": 0, "step": 1},
    )
    artifact = f"/api/2.0/mlflow-artifacts/artifacts/{exp_id}/{run_id}/artifacts/model.txt"
    mlflow.call("PUT", artifact, b"weights v1", raw=True)

    out = sh("bash", str(BACKUP), str(tmp_path))
    backup_dir = Path(out.stdout.strip().splitlines()[-1])
    assert {p.name for p in backup_dir.iterdir()} >= {
        "tracking.dump",
        "auth.dump",
        "artifacts.tar.gz",
    }

    # Lose everything: server stopped, both databases dropped, artifacts deleted (the objects
    # of the artifacts bucket, with the object store's admin key).
    supervisorctl("stop", "mlflow")
    try:
        port = stack["endpoints"]["postgresql_address"].rsplit(":", 1)[1]
        for db in ("mlflow", "mlflow_auth"):
            sh("runuser", "-u", "postgres", "--", "dropdb", "-p", port, "--if-exists", db)
        delete_artifacts(stack)
        sh("bash", str(RESTORE), str(backup_dir))
    finally:
        supervisorctl("start", "mlflow")
    mlflow.wait_healthy()

    # The admin login (auth store), the run and its metric (tracking store), and the artifact.
    got = mlflow.call("GET", f"/api/2.0/mlflow/runs/get?run_id={run_id}")["run"]
    assert got["info"]["run_name"] == "kept"
    assert {m["key"]: m["value"] for m in got["data"]["metrics"]} == {"accuracy": 0.93}
    assert mlflow.call("GET", artifact, raw=True) == b"weights v1"


def test_a_restore_that_fails_half_way_leaves_the_databases_as_they_were(stack, tmp_path):
    """Both databases or neither: a backup whose second dump cannot be restored changes
    nothing, though its first restores fine."""
    mlflow = MLflow(stack["endpoints"], stack["state"])
    mlflow.wait_healthy()
    out = sh("bash", str(BACKUP), str(tmp_path))
    backup_dir = Path(out.stdout.strip().splitlines()[-1])
    # Made after the backup: a restore of it would make this experiment disappear.
    name = f"after-the-backup-{int(time.time())}"
    exp_id = mlflow.call("POST", "/api/2.0/mlflow/experiments/create", {"name": name})[
        "experiment_id"
    ]
    dump = backup_dir / "auth.dump"
    dump.write_bytes(dump.read_bytes()[: len(dump.read_bytes()) // 2])  # cut off half-way
    supervisorctl("stop", "mlflow")
    try:
        proc = subprocess.run(["bash", str(RESTORE), str(backup_dir)], capture_output=True,
                              text=True, stdin=subprocess.DEVNULL, timeout=300)  # fmt: skip
    finally:
        supervisorctl("start", "mlflow")
    assert proc.returncode != 0 and "the live databases are as they were" in proc.stderr, tail(proc)
    mlflow.wait_healthy()
    got = mlflow.call("GET", f"/api/2.0/mlflow/experiments/get?experiment_id={exp_id}")
    assert got["experiment"]["name"] == name  # the tracking database was not replaced
    port = stack["endpoints"]["postgresql_address"].rsplit(":", 1)[1]
    listed = sh("runuser", "-u", "postgres", "--", "psql", "-p", port, "-Atc",
                "SELECT datname FROM pg_database").stdout.split()  # fmt: skip
    assert not [db for db in listed if db.endswith(("_incoming", "_previous"))], listed
