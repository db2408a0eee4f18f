"""Faults mid-run end in one line and a state RESUME=1 continues from.

MLflow: a real MLflow server (sqlite store) on a free loopback port, stopped while a run
trains; the run stops at its next checkpoint after the retry window (TRACKING_RETRY_S, short
here) with one line naming RESUME=1, and a resume after the server is back continues the same
MLflow run with no gap or repeat in its metrics."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import REPO, cli_env, run_cli

pytestmark = pytest.mark.slow
MLFLOW = Path(sys.executable).parent / "mlflow"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MlflowServer:
    """`mlflow server` on 127.0.0.1:<port> in its own session, stopped by its PID's group."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder, self.port = folder, port
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / "server.log", "a") as log:  # the child keeps its own copy
            self.proc = self._popen(log)
        deadline = time.monotonic() + 180
        while True:
            assert self.proc.poll() is None, (self.folder / "server.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "MLflow server did not start in 3 minutes"
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.5)

    def _popen(self, log) -> subprocess.Popen:
        return subprocess.Popen(
            [str(MLFLOW), "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
             "--artifacts-destination", str(self.folder / "artifacts"), "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None


@pytest.fixture
def server(tmp_path):
    server = MlflowServer(tmp_path / "mlflow", free_port())
    server.start()
    yield server
    server.stop()


def test_mlflow_lost_mid_run_stops_at_a_checkpoint_and_resume_continues(tmp_path, server):
    state = tmp_path / "state"
    settings = {"MLFLOW_TRACKING_URI": server.uri, "TASK": "classify", "TRACKING_RETRY_S": "6"}
    args = ["train", "run_name=flaky", "max_steps=200", "save_steps=20", "logging_steps=5"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "training", *args],
        cwd=REPO, env=cli_env(state, **settings), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    snapshot = state / "embedded" / "runs" / "flaky" / "checkpoint_manager_snapshot.json"
    while not snapshot.exists() and proc.poll() is None:
        time.sleep(0.1)
    assert proc.poll() is None, "the run ended before its first checkpoint"
    server.stop()  # MLflow is gone from here on
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 2, out[-3000:] + err[-3000:]
    assert "Traceback" not in out + err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: MLflow did not answer for 6 s"), err[-3000:]
    assert "continue with `make train TASK=classify RUN_NAME=flaky` (or RESUME=1)" in last

    server.start()
    resumed = run_cli(state, "train", RESUME="1", **settings)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "continuing run flaky" in resumed.stdout
    client = MlflowClient(server.uri)
    (run,) = client.search_runs(
        [client.get_experiment_by_name("classify").experiment_id],
        filter_string="tags.`mlflow.runName` = 'flaky'",
    )
    assert run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert steps == list(range(5, 201, 5))  # the same run: no gap, no repeat
