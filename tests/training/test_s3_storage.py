"""End to end with object storage: `python -m training train` checkpoints to `s3://` and logs
its model to an MLflow server whose artifacts live in S3, as on the stack.

STAND-IN: no MinIO server binary can be obtained on the build machines, so the S3 API here is
moto's server (`moto[server]`) on a free loopback port, started and stopped by these tests. The
MLflow server is started like the Ansible mlflow role does (`--serve-artifacts` onto
`s3://<bucket>/artifacts`, the S3 endpoint and keys in the server's environment only), with a
SQLite backend instead of PostgreSQL and without basic auth. The training client gets the S3
endpoint for its checkpoints (AWS_ENDPOINT_URL) but no MLFLOW_S3_ENDPOINT_URL: its artifacts
must go through the server's proxy."""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import mlflow
import pytest
from mlflow import MlflowClient

from tests.conftest import SCRUBBED, kill_when, run_cli
from training.tasks import TASKS

pytestmark = pytest.mark.slow

KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
CHECKPOINTS = "checkpoints"  # bucket of Ray's checkpoints
ARTIFACTS = "mlflow"  # bucket behind the MLflow server's artifact proxy
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(ready, what: str, proc: subprocess.Popen, log: Path | None = None) -> None:
    """Wait for a server this module started; fail with its log if it dies or never answers."""
    deadline = time.monotonic() + 180
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} did not start (exit {proc.poll()}):\n{tail}")
        time.sleep(0.5)


def stop(proc: subprocess.Popen) -> None:
    """End a server this module started, with every process it forked (its own session)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory) -> Iterator[str]:
    """moto's S3 server (the S3 stand-in) on loopback, with the two buckets of the stack."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:

        def answers() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False

        wait_until(answers, "moto's S3 server", proc, log)
        for bucket in (CHECKPOINTS, ARTIFACTS):
            s3(url).create_bucket(Bucket=bucket)
        yield url
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def mlflow_server(s3_endpoint, tmp_path_factory) -> Iterator[str]:
    """A real MLflow tracking server proxying artifacts to S3, as the mlflow role runs it."""
    home = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    env.update(
        MLFLOW_BACKEND_STORE_URI=f"sqlite:///{home / 'mlflow.db'}",
        MLFLOW_ARTIFACTS_DESTINATION=f"s3://{ARTIFACTS}/artifacts",
        MLFLOW_S3_ENDPOINT_URL=s3_endpoint,
        AWS_DEFAULT_REGION="us-east-1",
        HOME=str(home),
        **KEYS,
    )
    log = home / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                str(VENV_BIN / "mlflow"),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
                "--serve-artifacts",
            ],
            cwd=home,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its workers are in its process group: stop() ends them
        )
    url = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(url + "/health", timeout=5) as resp:
                    return resp.status == 200
            except (urllib.error.URLError, ConnectionError):
                return False

        wait_until(healthy, "the MLflow server", proc, log)
        yield url
    finally:
        stop(proc)


@functools.cache  # one client per endpoint: the kill test polls it many times a second
def s3(endpoint: str):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **lower(KEYS))


def lower(keys: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in keys.items()}


def keys_under(endpoint: str, bucket: str, prefix: str) -> list[str]:
    pages = s3(endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


def client_settings(s3_endpoint: str, mlflow_url: str, **more: str) -> dict[str, str]:
    """The training client's environment: the S3 endpoint for checkpoints, MLflow by URL."""
    return {
        "TASK": "classify",
        "MLFLOW_TRACKING_URI": mlflow_url,
        "CHECKPOINT_STORAGE": f"s3://{CHECKPOINTS}/runs",
        "AWS_ENDPOINT_URL": s3_endpoint,
        **KEYS,
        **more,
    }


@contextmanager
def tracking_at(url: str) -> Iterator[MlflowClient]:
    """MLflow's global URIs pointed at the server for the block, then put back as they were
    (the setters also export MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI to os.environ)."""
    variables = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    saved_env = {k: os.environ.get(k) for k in variables}
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(url)
    mlflow.set_registry_uri(url)
    try:
        yield MlflowClient(url, url)
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def only_run(client: MlflowClient, run_name: str):
    exp = client.get_experiment_by_name("classify")
    runs = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`mlflow.runName` = '{run_name}'"
    )
    assert len(runs) == 1
    return runs[0]


def test_train_checkpoints_to_s3_and_logs_the_model_through_the_proxy(
    s3_endpoint, mlflow_server, state_dir
):
    result = run_cli(
        state_dir, "train", "run_name=s3-e2e", **client_settings(s3_endpoint, mlflow_server)
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "model registered as classify version" in result.stdout

    # Ray's checkpoints are objects in the checkpoint bucket, the last one with the final model;
    # none land in the local state folder.
    checkpoints = keys_under(s3_endpoint, CHECKPOINTS, "runs/s3-e2e/")
    assert "runs/s3-e2e/checkpoint_manager_snapshot.json" in checkpoints
    assert any(k.endswith("/progress.json") for k in checkpoints)
    assert any(k.endswith("/model/model.safetensors") for k in checkpoints)
    assert not list((state_dir / "embedded" / "runs" / "s3-e2e").glob("checkpoint_*"))

    with tracking_at(mlflow_server) as client:
        run = only_run(client, "s3-e2e")
        assert run.info.status == "FINISHED"
        # The server hands out proxied artifact locations: the client never wrote to S3 itself.
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")
        version = max(
            client.search_model_versions("name = 'classify'"), key=lambda v: int(v.version)
        )
        assert version.run_id == run.info.run_id

        # ... and the proxy put the model's files in the artifact bucket.
        artifacts = keys_under(s3_endpoint, ARTIFACTS, "artifacts/")
        assert any(k.endswith("/MLmodel") for k in artifacts)
        assert any(k.endswith("/model/model.safetensors") for k in artifacts)
        assert any(k.endswith(f"{run.info.run_id}/artifacts/data/manifest.json") for k in artifacts)

        # The registered model loads back through the server and tells the topics apart.
        held_out = TASKS["classify"].generate(200, seed=20261128)
        model = mlflow.pyfunc.load_model(f"models:/classify/{version.version}")
        predicted = model.predict(held_out[["text"]])
    assert set(predicted["label"]) <= set(TASKS["classify"].labels)
    assert (predicted["label"] == held_out["label"]).mean() > 0.6  # chance: 0.25


def test_killed_run_resumes_from_its_s3_checkpoint(s3_endpoint, mlflow_server, state_dir):
    settings = client_settings(s3_endpoint, mlflow_server)
    snapshot = "runs/s3-resumable/checkpoint_manager_snapshot.json"

    def committed() -> bool:  # Ray wrote its snapshot of a committed checkpoint to S3
        return snapshot in keys_under(s3_endpoint, CHECKPOINTS, snapshot)

    kill_when(
        state_dir,
        ["train", "run_name=s3-resumable", "max_steps=100", "save_steps=20", "logging_steps=5"],
        committed,
        "checkpoint",
        **settings,
    )
    body = s3(s3_endpoint).get_object(Bucket=CHECKPOINTS, Key=snapshot)["Body"].read()
    killed_at = json.loads(body)["latest_checkpoint_result"]["metrics"]["step"]
    assert 0 < killed_at < 100, "the kill should land mid-run"

    result = run_cli(state_dir, "train", RESUME="1", **settings)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "continuing run s3-resumable" in result.stdout

    with tracking_at(mlflow_server) as client:
        run = only_run(client, "s3-resumable")
        assert run.info.status == "FINISHED"
        assert run.data.tags["resumed_from_step"] == str(killed_at)
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert steps == list(range(5, 101, 5))  # no gap, no repeat


def test_missing_bucket_stops_before_anything_starts(s3_endpoint, mlflow_server, state_dir):
    settings = client_settings(s3_endpoint, mlflow_server, CHECKPOINT_STORAGE="s3://nowhere/runs")
    result = run_cli(state_dir, "train", "run_name=no-bucket", **settings)
    assert result.returncode == 2
    assert "has no bucket 'nowhere'" in result.stderr
    with tracking_at(mlflow_server) as client:
        runs = client.search_runs(
            [e.experiment_id for e in client.search_experiments()],
            filter_string="tags.`mlflow.runName` = 'no-bucket'",
        )
    assert runs == []  # no MLflow run was made


def test_endpoint_without_scheme_stops_with_a_message(state_dir):
    result = run_cli(
        state_dir,
        "train",
        TASK="classify",
        CHECKPOINT_STORAGE=f"s3://{CHECKPOINTS}/runs",
        AWS_ENDPOINT_URL="127.0.0.1:9000",  # a common slip: the scheme left out
    )
    assert result.returncode == 2
    assert "'127.0.0.1:9000' (AWS_ENDPOINT_URL) is not a URL" in result.stderr
