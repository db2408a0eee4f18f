"""`make up` with an object store that cannot work stops in one line before any host changes:
OBJECT_STORE=nope, OBJECT_STORE=minio or MINIO_DOWNLOAD_URL= (the stack installs no MinIO),
OBJECT_STORE=external without S3_ENDPOINT, an S3_ENDPOINT that does not answer, wrong keys, and
a missing bucket the keys may not create.

The real site.yml runs (its first play checks the object store from the controller) against a
real SeaweedFS (`weed`, built by tools/seaweedfs/build.sh) whose `limited` identity may use the
stack's buckets but not create them. Everything runs in a network namespace of its own
(`unshare -n`), so no port of this machine is involved, and the play stops before the `common`
role touches the host. Its /tmp is the machine's: SeaweedFS names its gRPC Unix sockets there
by port, so this one listens on ports of its own, never the stack's (a local stack's sockets
would be replaced, and its S3 API would reach this filer)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO, cli_env
from tests.stack.stackenv import ANSIBLE_VENV, WEED

BUCKETS = ("mlflow-artifacts", "ray-checkpoints", "datasets")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0
    or shutil.which("unshare") is None
    or not os.access(WEED, os.X_OK)
    or not (ANSIBLE_VENV / "bin" / "ansible-playbook").exists(),
    reason="needs root, unshare, the weed binary and the Ansible venv",
)

# Runs inside the namespace: loopback up, SeaweedFS started and waited for, then one
# `python -m stack up` per case; prints {case: [exit status, stderr, ansible log]} as JSON.
DRIVER = r"""
import json, os, subprocess, sys, time
from pathlib import Path
import boto3
from botocore.client import Config

weed, data, config, cases = sys.argv[1], Path(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
server = subprocess.Popen(
    [weed, "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-volume.max=0",
     "-master.port=9633", "-volume.port=8380", "-filer.port=9188",
     "-master.volumeSizeLimitMB=64", "-filer", "-s3", f"-s3.config={config}", "-s3.port=9100",
     "-s3.autoCreateBucket=false", "-s3.iam=false", "-s3.port.iceberg=0", "-s3.port.lance=0"],
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    s3 = boto3.client("s3", endpoint_url="http://127.0.0.1:9100", aws_access_key_id="limited",
                      aws_secret_access_key="limited-secret", region_name="us-east-1",
                      config=Config(retries={"max_attempts": 1}, connect_timeout=2))
    deadline = time.monotonic() + 120
    while True:
        try:
            s3.list_objects_v2(Bucket="ray-checkpoints")
        except s3.exceptions.NoSuchBucket:
            break  # the S3 API answers and knows the identity
        except Exception:
            if time.monotonic() > deadline:
                sys.exit("SeaweedFS did not answer within 120 s")
            time.sleep(1)
    results = {}
    for name, (state, env) in cases.items():
        proc = subprocess.run([sys.executable, "-m", "stack", "up"], env=env, capture_output=True,
                              text=True, timeout=300, stdin=subprocess.DEVNULL)
        logs = sorted(Path(state, "local", "logs").glob("up-*.log"))
        results[name] = [proc.returncode, proc.stderr, logs[-1].read_text() if logs else ""]
    print(json.dumps(results))
finally:
    server.terminate()
    server.wait(timeout=60)
"""

CASES = {
    "unknown store": (
        {"OBJECT_STORE": "nope"},
        "OBJECT_STORE=nope is not an object store the stack knows",
    ),
    "minio": ({"OBJECT_STORE": "minio"}, "the stack no longer installs MinIO"),
    "minio binary": (
        {"MINIO_DOWNLOAD_URL": "/opt/minio"},
        "the stack no longer installs MinIO",
    ),
    "external without endpoint": (
        {"OBJECT_STORE": "external"},
        "OBJECT_STORE=external needs S3_ENDPOINT=http(s)://host:port",
    ),
    "endpoint that does not answer": (
        {"S3_ENDPOINT": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "limited",
         "AWS_SECRET_ACCESS_KEY": "limited-secret"},
        "S3_ENDPOINT=http://127.0.0.1:9 does not answer",
    ),
    "wrong keys": (
        {"S3_ENDPOINT": "http://127.0.0.1:9100", "AWS_ACCESS_KEY_ID": "limited",
         "AWS_SECRET_ACCESS_KEY": "not-the-secret"},
        "S3_ENDPOINT=http://127.0.0.1:9100 refused the keys on bucket mlflow-artifacts (403)",
    ),
    "missing bucket, no right to create it": (
        {"S3_ENDPOINT": "http://127.0.0.1:9100", "AWS_ACCESS_KEY_ID": "limited",
         "AWS_SECRET_ACCESS_KEY": "limited-secret"},
        "bucket mlflow-artifacts does not exist on S3_ENDPOINT=http://127.0.0.1:9100 and these "
        "keys may not create it",
    ),
}  # fmt: skip


def test_each_unusable_object_store_is_one_line_before_any_host_changes(tmp_path):
    config = tmp_path / "s3.json"
    actions = [f"{a}:{b}" for b in BUCKETS for a in ("Read", "Write", "List")]
    identity = {"accessKey": "limited", "secretKey": "limited-secret"}
    config.write_text(json.dumps(
        {"identities": [{"name": "limited", "credentials": [identity], "actions": actions}]}
    ))  # fmt: skip
    (tmp_path / "weed").mkdir()
    cases = {}
    for n, (name, (settings, _)) in enumerate(CASES.items()):
        state = tmp_path / f"state-{n}"
        # Each case is a user's first `make up` on a machine of its own.
        env = cli_env(state, ANSIBLE_VENV=str(ANSIBLE_VENV), **settings)
        env["CHAMELEON_MLOPS_MACHINE_DIR"] = str(tmp_path / f"machine-{n}")
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            if key not in settings:
                env.pop(key, None)
        cases[name] = (str(state), env)
    proc = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", DRIVER, WEED, str(tmp_path / "weed"),
         str(config), json.dumps(cases)],
        cwd=REPO, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, (_, expected) in CASES.items():
        code, stderr, log = results[name]
        print(f"{name}: {stderr.strip()}")
        assert code == 2, (name, stderr)
        assert "Traceback" not in stderr, (name, stderr)
        (line,) = stderr.strip().splitlines()
        assert line.startswith("error: ") and expected in line, (name, line)
        # The check is the first play: the hosts were never prepared.
        assert "PLAY [Prepare every stack host]" not in log, (name, log[-2000:])
