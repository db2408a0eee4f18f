"""CLOUD=sim end to end: `make up CLOUD=sim` configures the stack on a head and 2 worker hosts
(the software installed once on this machine, site.yml over SSH through the head) -> Ray lists
the head and both workers -> with `make tunnel` open, a DDP and an FSDP run of classify (smoke)
train with one worker on each worker host, tracked by MLflow on the head with their model
registered -> Ray Train survives a worker host's Ray killed mid-run -> `make bench` compares 1
and 2 worker hosts -> `make study` runs its 2-worker cell on both worker hosts -> a job
cannot step around its own credentials (the escape suite, from the services host and each
worker host) -> a second `make up` changes nothing -> `make down PURGE=1` backs the data up,
then leaves nothing behind.

The tests run in file order and share one sim stack (module fixture)."""

from __future__ import annotations

import base64
import csv
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from stack import access
from stack.sim import cluster as sim_cluster
from stack.sim import hosts
from stack.state import Stack
from tests.conftest import REPO, cli_env, run_cli, service_rows
from tests.sim.test_sim import leftovers, snapshot
from tests.stack import escape

STACK = "simstack"
WEED = os.environ.get("SEAWEEDFS_DOWNLOAD_URL") or "/var/cache/chameleon-mlops/bin/weed"
UP_TIMEOUT_S = 1800  # the first `up` installs the stack's software on this machine


def sim(state: Path, *args: str, timeout: int = UP_TIMEOUT_S, **settings: str):
    return run_cli(
        state, *args, timeout=timeout, module="stack", CLOUD="sim", STACK_NAME=STACK,
        SEAWEEDFS_DOWNLOAD_URL=WEED, **settings,
    )  # fmt: skip


def tail(proc, lines: int = 60) -> str:
    return "\n".join((proc.stdout + proc.stderr).splitlines()[-lines:])


@pytest.fixture(scope="module")
def machine_before() -> dict:
    return snapshot()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, machine_before):
    if not os.access(WEED, os.X_OK):
        pytest.skip(f"no weed binary at {WEED}: bash tools/seaweedfs/build.sh builds it")
    state = tmp_path_factory.mktemp("simstack") / "state"
    up = sim(state, "up", SIM_WORKERS="2")
    print(up.stdout)
    os.environ["STACK_DIR"] = str(state)
    try:
        recorded = sim_cluster.load(Stack(STACK, "sim"))
        assert up.returncode == 0, tail(up)
        yield state, recorded, up
    finally:
        sim(state, "down", timeout=300)
        os.environ.pop("STACK_DIR", None)


@pytest.fixture(scope="module")
def tunnel(stack):
    """`make tunnel` open in the background, as a user keeps it in another terminal."""
    state = stack[0]
    proc = subprocess.Popen(
        [sys.executable, "-m", "stack", "tunnel"],
        cwd=REPO,
        env=cli_env(state, CLOUD="sim", STACK_NAME=STACK),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    ports = list(access.tunnelled_ports().values())
    deadline = time.monotonic() + 60
    while not all(_answers(port) for port in ports):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "make tunnel did not open its ports"
        time.sleep(0.5)
    yield proc
    proc.terminate()
    proc.wait(timeout=30)


def _answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def endpoints(state: Path) -> dict:
    return json.loads((state / STACK / "endpoints.json").read_text())


def mlflow(state: Path, path: str, body: dict | None = None) -> dict:
    password = (state / STACK / "secrets" / "mlflow_admin_password").read_text().strip()
    login = base64.b64encode(f"admin:{password}".encode()).decode()
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"{endpoints(state)['mlflow_tracking_uri']}/api/2.0/mlflow/{path}",
        data,
        {"Authorization": f"Basic {login}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def run_named(state: Path, name: str, experiment_name: str = "classify") -> dict | None:
    try:
        experiment = mlflow(state, f"experiments/get-by-name?experiment_name={experiment_name}")
    except urllib.error.HTTPError as e:
        if e.code == 404:  # the run that makes the experiment has not started yet
            return None
        raise
    search = {
        "experiment_ids": [experiment["experiment"]["experiment_id"]],
        "filter": f"attributes.run_name = '{name}'",
    }
    (run,) = mlflow(state, "runs/search", search).get("runs", []) or [None]
    return run


def loss_steps(state: Path, run_id: str) -> list[int]:
    history = mlflow(state, f"metrics/get-history?run_id={run_id}&metric_key=train/loss")
    return [int(m["step"]) for m in history.get("metrics", [])]


def test_up_configures_the_hosts_and_ray_has_the_head_and_both_workers(stack):
    state, recorded, up = stack
    assert "is configured" in up.stdout, tail(up)
    checked = service_rows(up.stdout)
    for service in ("MLflow", "Ray", "SeaweedFS"):
        assert checked[service][0] == "ok", up.stdout
    # The clients here reach the services through the tunnel; their own addresses are private.
    urls = endpoints(state)
    assert urls["mlflow_tracking_uri"] == "http://127.0.0.1:5000"
    assert urls["private"]["mlflow_tracking_uri"].startswith(f"http://{recorded.head.address}:")
    status = sim(state, "status", timeout=120)
    print(status.stdout)
    assert status.returncode == 0, tail(status)
    rows = {line.split("│")[1].strip(): line for line in status.stdout.splitlines() if "│" in line}
    for host in recorded.hosts:
        assert "ALIVE" in rows[host.name], status.stdout
    assert "CPU 0" in rows["head"], status.stdout  # the services host trains nothing


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_classify_trains_on_both_worker_hosts(stack, strategy, request):
    """The first run with no `make tunnel` open (the command opens its own SSH forwards and
    ends them), the second with it open (the command uses it)."""
    state, recorded, _ = stack
    name = f"sim-{strategy}-{int(time.time())}"
    user_tunnel = _answers(5000)
    proc = run_cli(
        state, "train", timeout=900, STACK_NAME=STACK, TASK="classify", WORKERS="2",
        STRATEGY=strategy, RUN_NAME=name,
    )  # fmt: skip
    print(proc.stdout[-3000:])
    assert proc.returncode == 0, tail(proc)
    assert "submitted job train-classify-" in proc.stdout, tail(proc)
    if not user_tunnel:  # no SSH process of the command's is left
        forwards = ["pgrep", "-af", "ssh -N -o ExitOnForwardFailure=yes"]
        left = subprocess.run(forwards, capture_output=True, text=True).stdout
        assert not left, left
    request.getfixturevalue("tunnel")  # the checks below read MLflow through `make tunnel`
    run = run_named(state, name)
    # The run's link is the tunnel's, not the head's private address.
    assert "http://127.0.0.1:5000/#/experiments/" in proc.stdout, tail(proc)
    assert run["info"]["status"] == "FINISHED"
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    # One Ray Train worker on each worker host (their hostnames are <stack>-<host>).
    assert sorted(tags["worker_hosts"].split(",")) == [
        f"{STACK}-{w.name}" for w in recorded.workers
    ], tags
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["strategy"] == strategy
    versions = mlflow(state, "registered-models/get?name=classify")["registered_model"]
    assert any(v["run_id"] == run["info"]["run_id"] for v in versions["latest_versions"])


def test_a_lost_worker_host_is_survived_from_the_latest_checkpoint(stack, tunnel):
    """Every Ray process of worker-1 killed mid-run (its supervisor restarts the node): Ray
    Train restarts the workers from the latest checkpoint, and MLflow's history has each
    logging step once."""
    state, recorded, _ = stack
    name = f"sim-lost-{int(time.time())}"
    settings = dict(
        STACK_NAME=STACK, TASK="classify", WORKERS="2", STRATEGY="ddp", RUN_NAME=name,
        max_steps="120", save_steps="20", logging_steps="5", max_failures="4",
    )  # fmt: skip
    # One restart is all a lost host has been seen to cost; the rest is room, not a need.
    train = subprocess.Popen(
        [sys.executable, "-m", "training", "train"],
        cwd=REPO,
        env=cli_env(state, **settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # Metric points reach MLflow with each checkpoint: once there are some, there is a
        # checkpoint to restart from.
        deadline = time.monotonic() + 600
        while True:
            assert train.poll() is None, train.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
            run = run_named(state, name)
            if run and loss_steps(state, run["info"]["run_id"]):
                break
            time.sleep(0.5)
        victim = recorded.workers[0]
        kill = subprocess.run(
            hosts.enter(victim) + ["pkill", "-KILL", "-u", "ray"], env=hosts.HOST_ENV
        )
        assert kill.returncode == 0, "no Ray process to kill on worker-1"
        out, _ = train.communicate(timeout=900)
    finally:
        if train.poll() is None:
            train.kill()
    print(out[-3000:])
    assert train.returncode == 0, out[-3000:]
    run = run_named(state, name)
    assert run["info"]["status"] == "FINISHED"
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert int(tags["resumed_from_step"]) >= 20, tags  # restarted from a checkpoint
    assert loss_steps(state, run["info"]["run_id"]) == list(range(5, 121, 5))


def test_bench_compares_one_and_two_worker_hosts(stack, tunnel, tmp_path):
    state = stack[0]
    proc = run_cli(
        state, "bench", timeout=900, STACK_NAME=STACK, TASK="classify",
        BENCH_STRATEGIES="ddp,fsdp", BENCH_WORKERS="1,2", BENCH_BATCH="8", BENCH_STEPS="3",
        BENCH_WARMUP="1", REPORTS_DIR=str(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 0, tail(proc)
    (results,) = (tmp_path / "bench").glob("*/results.csv")
    with results.open() as f:
        rows = list(csv.DictReader(f))
    print(results.read_text())
    cells = {(r["strategy"], r["workers"]): r for r in rows}
    assert set(cells) == {(s, w) for s in ("ddp", "fsdp") for w in ("1", "2")}, rows
    for cell in cells.values():
        assert cell["status"] == "ok" and float(cell["samples_per_s"]) > 0, cell


def test_a_study_runs_its_two_worker_cell_on_both_worker_hosts(stack, tunnel, tmp_path):
    """`make study` as a job: its cells are `make train` runs on the stack's cluster, the
    2-worker cell with one worker on each worker host; the report comes back here."""
    state, recorded, _ = stack
    name = f"simstudy-{int(time.time())}"
    proc = run_cli(
        state, "study", timeout=900, STACK_NAME=STACK, TASKS="classify", RUN_NAME=name,
        STUDY_STRATEGIES="ddp", STUDY_WORKERS="1,2", STUDY_BATCH="8", STUDY_EPOCHS="1",
        MAX_TRAIN_SAMPLES="320", REPORTS_DIR=str(tmp_path),
    )  # fmt: skip
    print(proc.stdout[-3000:])
    assert proc.returncode == 0, tail(proc)
    assert "submitted job study-" in proc.stdout, tail(proc)
    (report,) = (tmp_path / "study").glob("*/report.md")
    assert "## Reading" in report.read_text()
    parent = run_named(state, name, "study")
    assert parent["info"]["status"] == "FINISHED"
    for workers in (1, 2):
        cell = run_named(state, f"{name}-classify-ddp-x{workers}-b8", "study")
        assert cell["info"]["status"] == "FINISHED"
        tags = {t["key"]: t["value"] for t in cell["data"]["tags"]}
        assert tags["mlflow.parentRunId"] == parent["info"]["run_id"]
        used = tags["worker_hosts"].split(",")
        assert len(set(used)) == workers, tags  # one worker per host
        assert set(used) <= {f"{STACK}-{w.name}" for w in recorded.workers}, tags


def test_a_job_cannot_step_around_its_own_credentials(stack, tunnel, tmp_path, monkeypatch):
    """The escape suite (tests/stack/escape_job.py) on sim: from the job's driver on the
    services host, and from a task on each GPU worker host at the services host's private
    address; each attempt fails, the job's own front doors open."""
    state, recorded, _ = stack
    head = recorded.head.address
    urls = endpoints(state)  # the tunnel's ends: how this machine submits the job
    settings = escape.job_settings(urls, head, head, head, workers=True)
    attempts, doors = escape.outcomes(escape.run_job(urls, settings, tmp_path, monkeypatch))
    escape.report(attempts, doors, "sim")
    assert len({a["where"] for a in attempts}) == 1 + len(recorded.workers)
    assert len(attempts) >= escape.MIN_ATTEMPTS
    assert [(a["where"], a["name"]) for a in attempts if not a["blocked"]] == []
    assert doors and all(d["open"] for d in doors), doors


def test_a_second_up_changes_nothing(stack):
    state = stack[0]
    again = sim(state, "up", SIM_WORKERS="2")
    assert again.returncode == 0, tail(again)
    assert "is configured (no changes" in again.stdout, tail(again)


def test_down_purge_backs_up_then_leaves_nothing(stack, tunnel, machine_before):
    state, recorded, _ = stack
    tunnel.terminate()  # the user's `make tunnel`, closed first
    proc = sim(state, "down", timeout=600, PURGE="1", CONFIRM=STACK)
    assert proc.returncode == 0, tail(proc)
    assert "backed up to" in proc.stdout and "(verified)" in proc.stdout, tail(proc)
    (backup,) = (state / "backups" / STACK).iterdir()
    assert (backup / "tracking.dump").is_file()
    assert not (state / STACK).exists()  # the hosts' data went with the state folder
    assert leftovers(STACK, state, machine_before, recorded) == []
