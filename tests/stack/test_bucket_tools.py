"""mlflow-stack/create_buckets.py and s3_sync.py against an S3 API on loopback.

STAND-IN: no MinIO server binary can be obtained on the build machines, so these tests talk to
moto's S3 server (`moto[server]`, installed in the Ansible venv) on 127.0.0.1 instead. They check
the scripts' S3 calls (bucket creation is idempotent, a prefix round-trips), not MinIO itself.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from stackenv import ANSIBLE_VENV, REPO

STACK = REPO / "mlflow-stack"
PYTHON = ANSIBLE_VENV / "bin" / "python"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    moto_server = ANSIBLE_VENV / "bin" / "moto_server"
    if not moto_server.exists():
        pytest.skip("moto[server] is not installed in the Ansible venv (ansible/requirements.txt)")
    port = _free_port()
    proc = subprocess.Popen(
        [str(moto_server), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _env(endpoint: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        S3_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    return env


def _run(args: list[str], endpoint: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(PYTHON), *args],
        env=_env(endpoint),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


def test_create_buckets_creates_once_then_reports_existing(s3_endpoint):
    buckets = ["mlflow-artifacts", "ray-checkpoints", "datasets"]
    first = _run([str(STACK / "create_buckets.py"), *buckets], s3_endpoint)
    assert first.returncode == 0, first.stderr
    assert first.stdout.split("\n")[:3] == [f"created {b}" for b in buckets]
    second = _run([str(STACK / "create_buckets.py"), *buckets], s3_endpoint)
    assert second.returncode == 0, second.stderr
    assert "created" not in second.stdout
    assert second.stdout.split("\n")[:3] == [f"exists {b}" for b in buckets]


def test_create_buckets_unreachable_endpoint_is_one_line(tmp_path):
    proc = _run([str(STACK / "create_buckets.py"), "x-bucket"], f"http://127.0.0.1:{_free_port()}")
    assert proc.returncode == 1
    assert proc.stderr.startswith("create_buckets: http://127.0.0.1:")
    assert "Traceback" not in proc.stderr


def test_s3_sync_round_trips_a_prefix(s3_endpoint, tmp_path: Path):
    assert _run([str(STACK / "create_buckets.py"), "mlflow-artifacts"], s3_endpoint).returncode == 0
    src = tmp_path / "src"
    (src / "1" / "abc" / "artifacts").mkdir(parents=True)
    (src / "1" / "abc" / "artifacts" / "model.txt").write_text("weights")
    (src / "meta.yaml").write_text("name: x")
    up = _run(
        [str(STACK / "s3_sync.py"), "upload", str(src), "s3://mlflow-artifacts/artifacts"],
        s3_endpoint,
    )
    assert up.returncode == 0, up.stderr
    assert up.stdout.strip() == "uploaded 2 objects"
    dest = tmp_path / "dest"
    down = _run(
        [str(STACK / "s3_sync.py"), "download", "s3://mlflow-artifacts/artifacts", str(dest)],
        s3_endpoint,
    )
    assert down.returncode == 0, down.stderr
    assert (dest / "1" / "abc" / "artifacts" / "model.txt").read_text() == "weights"
    assert (dest / "meta.yaml").read_text() == "name: x"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))
