"""End to end on this machine, through make as a user types it:

make up (SeaweedFS the object store, HF_TOKEN set) -> make up (no changes) -> make train
TASK=classify (a Ray job on the stack) -> the run, its metrics and model on the stack's MLflow
(REST, generated login; 401 without), its checkpoints and model objects in their buckets, the
job's environment without any admin secret, HF_TOKEN for the job's code but not in any job the
Jobs API shows, each S3 identity refused outside its buckets -> make backup holds the buckets
-> make bench on the stack, its report copied back -> Ctrl-C leaves a job running, make cancel
stops it after a checkpoint -> make status names a stopped service, make up repairs it -> bad
settings fail before submission -> make down (ports free, again harmless, the host's firewall
as found) -> make up refused while a port is taken -> make up -> the run is still there -> make
down PURGE=1 (verified backup first, the stack's data gone, a database of the user's in Debian's
own cluster kept) -> a fresh make up -> make restore -> the runs, model and checkpoints are back
under the new logins and the killed run continues with RESUME=1 -> make down PURGE=1.

The tests run in file order on the session's one stack (conftest.py), which they take down.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from stackenv import HF_TOKEN, REPO, STACK_TABLES, make, make_env, nft_tables, tail

from core.services import local_ports

PORTS = list(local_ports())  # every port the stack's services listen on


@pytest.fixture(scope="module")
def stack_dir(stack) -> Path:
    """The session's stack (conftest.py): these tests take it on to `make down`."""
    return stack["dir"]


def state(stack_dir: Path) -> Path:
    return stack_dir / "local"


def endpoints(stack_dir: Path) -> dict:
    return json.loads((state(stack_dir) / "endpoints.json").read_text())


def secret(stack_dir: Path, name: str) -> str:
    return (state(stack_dir) / "secrets" / name).read_text().strip()


def get(url: str, headers: dict | None = None, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {**(headers or {}), "Content-Type": "application/json"}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data, headers)) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, {}


def mlflow(stack_dir: Path, path: str, auth: bool = True, body=None) -> tuple[int, dict]:
    login = f"admin:{secret(stack_dir, 'mlflow_admin_password')}".encode()
    headers = {"Authorization": "Basic " + base64.b64encode(login).decode()} if auth else {}
    uri = endpoints(stack_dir)["mlflow_tracking_uri"]
    return get(f"{uri}/api/2.0/mlflow/{path}", headers, body)


def classify_runs(stack_dir: Path, search_filter: str) -> list[dict]:
    """Runs of the classify experiment on the stack's server that match an MLflow filter."""
    status, body = mlflow(stack_dir, "experiments/get-by-name?experiment_name=classify")
    assert status == 200, status
    search = {
        "experiment_ids": [body["experiment"]["experiment_id"]],
        "filter": search_filter,
    }
    status, body = mlflow(stack_dir, "runs/search", body=search)
    assert status == 200, status
    return body.get("runs", [])


def s3(stack_dir: Path, identity: str):
    """A boto3 client of the stack's object store with one identity's keys."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoints(stack_dir)["s3_endpoint"],
        aws_access_key_id=f"stack-{identity}",
        aws_secret_access_key=secret(stack_dir, f"seaweedfs_{identity}_secret_key"),
        region_name="us-east-1",
    )


def objects(stack_dir: Path, bucket: str, prefix: str) -> list[str]:
    listing = s3(stack_dir, "admin").list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for o in listing.get("Contents", [])]


def snapshot_key(run_name: str) -> str:
    """Ray Train's record of a run's committed checkpoints, in the checkpoints bucket."""
    return f"checkpoints/{run_name}/checkpoint_manager_snapshot.json"


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_up_configures_a_healthy_stack_and_says_how_to_log_in(stack_dir, stack):
    proc = stack["first"]  # the session's `make up`
    assert proc.returncode == 0, tail(proc)
    out = proc.stdout
    assert "http://127.0.0.1:5000" in out and "http://127.0.0.1:8265" in out, out
    assert "secrets/mlflow_admin_password" in out and "secrets/ray_auth_token" in out, out
    assert "failing" not in out, out
    folder = state(stack_dir)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for path in (folder / "secrets").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert path.read_text().strip() not in proc.stdout + proc.stderr, f"{path.name} printed"
    for log in (folder / "logs").iterdir():
        text = log.read_text()
        for path in (folder / "secrets").iterdir():
            assert path.read_text().strip() not in text, f"{path.name} in {log.name}"


def test_second_up_reports_no_changes(stack):
    proc = stack["second"]
    assert proc.returncode == 0, tail(proc)
    assert "no changes" in proc.stdout, tail(proc)


def test_services_refuse_requests_without_the_generated_credentials(stack_dir):
    assert mlflow(stack_dir, "experiments/search?max_results=1", auth=False)[0] == 401
    assert mlflow(stack_dir, "experiments/search?max_results=1")[0] == 200
    ray = endpoints(stack_dir)["ray_address"]
    assert get(f"{ray}/api/jobs/")[0] == 401
    token = {"Authorization": f"Bearer {secret(stack_dir, 'ray_auth_token')}"}
    assert get(f"{ray}/api/jobs/", token)[0] == 200


@pytest.fixture(scope="module")
def trained(stack_dir) -> dict:
    """The run `make train` made on the stack (module scoped: later tests look for it)."""
    return {"name": f"stack-e2e-{int(time.time())}"}


def test_train_runs_as_a_ray_job_and_tracks_to_the_stack(stack_dir, trained):
    proc = make(stack_dir, "train", "TASK=classify", f"RUN_NAME={trained['name']}", timeout=900)
    assert proc.returncode == 0, tail(proc)
    assert "submitted job train-classify-" in proc.stdout, tail(proc)
    # The job ran on the stack's cluster (its Jobs API knows it) and succeeded.
    ray = endpoints(stack_dir)["ray_address"]
    token = {"Authorization": f"Bearer {secret(stack_dir, 'ray_auth_token')}"}
    _, jobs = get(f"{ray}/api/jobs/", token)
    ours = [j for j in jobs if j["submission_id"].startswith("train-classify-")]
    assert [j["status"] for j in ours] == ["SUCCEEDED"], ours
    # Its run is on the stack's MLflow server, finished, with eval metrics and a model.
    (run,) = classify_runs(stack_dir, f"attributes.run_name = '{trained['name']}'")
    assert run["info"]["status"] == "FINISHED"
    trained["run_id"] = run["info"]["run_id"]
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert tags["ray_job_id"] == ours[0]["submission_id"]
    assert tags["git_commit"] != "unknown"  # the job's copy of the tree has no .git
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert metrics["eval/accuracy"] > 0.6, metrics
    status, body = mlflow(stack_dir, "registered-models/get?name=classify")
    assert status == 200, body
    versions = body["registered_model"]["latest_versions"]
    assert any(v["run_id"] == run["info"]["run_id"] for v in versions), versions
    # Its checkpoints are objects in the checkpoints bucket, its model in the artifacts bucket.
    assert endpoints(stack_dir)["checkpoint_storage"] == "s3://ray-checkpoints/checkpoints"
    saved = objects(stack_dir, "ray-checkpoints", f"checkpoints/{trained['name']}/")
    assert any("/checkpoint_" in key for key in saved), saved
    run_artifacts = objects(stack_dir, "mlflow-artifacts", "artifacts/")
    assert any(key.endswith("MLmodel") for key in run_artifacts), run_artifacts[:20]


def test_jobs_hold_no_admin_secret(stack_dir):
    """Every job inherits the nodes' environment: the training login and keys only."""
    environment = Path("/etc/ray/environment").read_text()
    assert "MLFLOW_TRACKING_USERNAME=training" in environment
    assert secret(stack_dir, "mlflow_admin_password") not in environment
    assert secret(stack_dir, "seaweedfs_admin_secret_key") not in environment
    assert secret(stack_dir, "seaweedfs_training_secret_key") in environment


def test_hf_token_reaches_the_jobs_code_but_not_its_submitted_environment(stack_dir):
    assert secret(stack_dir, "hf_token") == HF_TOKEN  # kept 0600 (checked by the first test)
    ray = endpoints(stack_dir)["ray_address"]
    token = {"Authorization": f"Bearer {secret(stack_dir, 'ray_auth_token')}"}
    # The job prints a digest of the HF_TOKEN it sees, never the token itself.
    probe = (
        "import hashlib, os; "
        "print('digest', hashlib.sha256(os.environ['HF_TOKEN'].encode()).hexdigest())"
    )
    status, body = get(f"{ray}/api/jobs/", token, {"entrypoint": f'python -c "{probe}"'})
    assert status == 200, body
    job = body["submission_id"]
    deadline = time.monotonic() + 120
    while (info := get(f"{ray}/api/jobs/{job}", token)[1])["status"] in ("PENDING", "RUNNING"):
        assert time.monotonic() < deadline, info
        time.sleep(1)
    logs = get(f"{ray}/api/jobs/{job}/logs", token)[1]["logs"]
    assert info["status"] == "SUCCEEDED", logs
    assert f"digest {hashlib.sha256(HF_TOKEN.encode()).hexdigest()}" in logs, logs
    # No job the Jobs API shows carries it: not this one, not the one `make train` submitted
    # with HF_TOKEN in its environment.
    _, jobs = get(f"{ray}/api/jobs/", token)
    assert any(j["submission_id"].startswith("train-classify-") for j in jobs)
    assert HF_TOKEN not in json.dumps(jobs)


def test_each_identity_is_refused_outside_its_buckets(stack_dir):
    from botocore.exceptions import ClientError

    def refused(call, **kwargs) -> bool:
        try:
            call(**kwargs)
        except ClientError as err:
            return err.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        return False

    training, tracking = s3(stack_dir, "training"), s3(stack_dir, "mlflow")
    assert refused(training.list_objects_v2, Bucket="mlflow-artifacts")
    assert refused(training.put_object, Bucket="mlflow-artifacts", Key="x", Body=b"x")
    assert refused(tracking.list_objects_v2, Bucket="ray-checkpoints")
    assert refused(tracking.get_object, Bucket="ray-checkpoints", Key="checkpoints/x")
    for client in (training, tracking):
        assert refused(client.create_bucket, Bucket="not-allowed")
        assert refused(client.delete_bucket, Bucket="datasets")
    # While each may use its own.
    assert tracking.list_objects_v2(Bucket="mlflow-artifacts")["KeyCount"] > 0
    assert training.list_objects_v2(Bucket="ray-checkpoints")["KeyCount"] > 0


def test_backup_holds_the_buckets_objects(stack_dir, trained):
    proc = make(stack_dir, "backup")
    assert proc.returncode == 0, tail(proc)
    (backup,) = (stack_dir / "backups" / "local").iterdir()
    names = {p.name for p in backup.iterdir()}
    assert {"tracking.dump", "auth.dump", "artifacts.tar.gz"} <= names, names
    assert {"bucket-ray-checkpoints.tar.gz", "bucket-datasets.tar.gz"} <= names, names
    with tarfile.open(backup / "bucket-ray-checkpoints.tar.gz") as tar:
        members = tar.getnames()
    assert any(f"{trained['name']}/checkpoint_" in m for m in members), members[:20]
    with tarfile.open(backup / "artifacts.tar.gz") as tar:
        assert any(m.endswith("MLmodel") for m in tar.getnames())
    shutil.rmtree(backup)  # the PURGE test below expects the one backup it makes


def test_bench_runs_on_the_stack_and_its_report_comes_back(stack_dir, tmp_path):
    proc = make(
        stack_dir,
        "bench",
        "TASK=classify",
        "BENCH_STRATEGIES=ddp",
        "BENCH_WORKERS=1",
        "BENCH_BATCH=8",
        "BENCH_STEPS=3",
        "BENCH_WARMUP=1",
        f"REPORTS_DIR={tmp_path}",
        timeout=900,
    )
    assert proc.returncode == 0, tail(proc)
    assert "submitted job bench-classify-" in proc.stdout, tail(proc)
    (report,) = (tmp_path / "bench").glob("*/report.md")
    assert "ddp" in report.read_text()
    assert (report.parent / "results.csv").is_file()


def test_ctrl_c_leaves_the_job_running_and_cancel_stops_it(stack_dir, trained):
    env = make_env(stack_dir)
    trained["killed"] = f"stack-killed-{int(time.time())}"  # continued after the restore below
    train = ["train", "TASK=classify", f"RUN_NAME={trained['killed']}", "max_steps=100000"]
    # Its own process group, which gets the SIGINT a terminal's Ctrl-C would send.
    proc = subprocess.Popen(
        ["make", "--no-print-directory", *train, "save_steps=20", "logging_steps=5"],
        cwd=REPO,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    job = ""
    for line in proc.stdout:
        if line.startswith("submitted job "):
            job = line.split()[2]
            break
    assert job, "no job was submitted"
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert f"job {job} keeps running" in err and f"make cancel JOB={job}" in err, err
    ray = endpoints(stack_dir)["ray_address"]
    token = {"Authorization": f"Bearer {secret(stack_dir, 'ray_auth_token')}"}
    assert get(f"{ray}/api/jobs/{job}", token)[1]["status"] in ("PENDING", "RUNNING")

    # Once the job has committed a checkpoint, stop it: the run ends KILLED.
    of_job = f"tags.ray_job_id = '{job}'"
    deadline = time.monotonic() + 300
    while not objects(stack_dir, "ray-checkpoints", snapshot_key(trained["killed"])):
        assert time.monotonic() < deadline, "no checkpoint after 300 s"
        time.sleep(2)
    cancel = make(stack_dir, "cancel", f"JOB={job}")
    assert cancel.returncode == 0, tail(cancel)
    assert get(f"{ray}/api/jobs/{job}", token)[1]["status"] == "STOPPED"
    (run,) = classify_runs(stack_dir, of_job)
    assert run["info"]["status"] == "KILLED"


def test_status_names_a_failing_service_and_up_repairs_it(stack_dir):
    subprocess.run(["supervisorctl", "stop", "mlflow"], check=True, capture_output=True)
    status = make(stack_dir, "status")
    assert status.returncode == 0, tail(status)
    (row,) = [line for line in status.stdout.splitlines() if "MLflow" in line and "│" in line]
    assert "failing" in row and "/var/log/supervisor/mlflow.log" in row, status.stdout
    repair = make(stack_dir, "up")
    assert repair.returncode == 0, tail(repair)
    assert "no changes" not in repair.stdout and "failing" not in repair.stdout, repair.stdout


def test_bad_settings_fail_here_before_any_job_is_submitted(stack_dir):
    proc = make(stack_dir, "train", "TASK=classify", "LEARNING_RATE=fast")
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "learning_rate" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert "submitted job" not in proc.stdout


def test_what_only_the_job_can_check_fails_there_in_one_line(stack_dir):
    """A model the nodes cannot find is known only where the model loads: the job's own
    one-line error comes back here, and `make train` fails."""
    proc = make(stack_dir, "train", "TASK=classify", "MODEL=no-such/model")
    assert proc.returncode == 2, tail(proc)
    assert "submitted job train-classify-" in proc.stdout, tail(proc)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no-such/model" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_down_stops_everything_and_frees_the_ports(stack_dir):
    proc = make(stack_dir, "down")
    assert proc.returncode == 0, tail(proc)
    assert not [port for port in PORTS if listening(port)]
    again = make(stack_dir, "down")
    assert again.returncode == 0, tail(again)
    status = make(stack_dir, "status")
    assert "down" in status.stdout, status.stdout


def test_down_leaves_the_host_firewall_as_found(stack_dir, host_firewall_before):
    """`make up` replaced /etc/nftables.conf and loaded the stack's tables; `make down` put the
    file back byte for byte, unloaded the tables and removed the stack's host folder."""
    config = Path("/etc/nftables.conf")
    assert (config.read_bytes() if config.exists() else None) == host_firewall_before["config"]
    assert nft_tables() & set(STACK_TABLES) == host_firewall_before["tables"] & set(STACK_TABLES)
    assert not Path("/etc/chameleon-mlops").exists()


def test_up_refuses_a_port_another_program_holds(stack_dir):
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", 5000))
        squatter.listen()
        proc = make(stack_dir, "up")
    assert proc.returncode != 0
    assert "port 5000 (MLflow) is already in use" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_up_again_brings_back_the_earlier_run(stack_dir, trained):
    proc = make(stack_dir, "up")
    assert proc.returncode == 0, tail(proc)
    (run,) = classify_runs(stack_dir, f"attributes.run_name = '{trained['name']}'")
    assert run["info"]["run_id"] == trained["run_id"]
    assert run["info"]["status"] == "FINISHED"


@pytest.fixture
def users_own_database():
    """A database the user keeps in Debian's `main` cluster, the host's own PostgreSQL (made and
    started here when absent or stopped, and stopped or dropped again afterwards)."""
    main = ["15", "main"]
    made = not Path("/etc/postgresql/15/main").exists()
    if made:
        sh("pg_createcluster", *main)
    started = "online" not in sh("pg_lsclusters", "--no-header", *main).stdout
    if started:
        sh("pg_ctlcluster", *main, "start")

    def psql(sql: str, db: str = "postgres") -> str:
        return sh("runuser", "-u", "postgres", "--", "psql", "-p", "5432", "-d", db,
                  "-tAc", sql).stdout.strip()  # fmt: skip

    psql("DROP DATABASE IF EXISTS users_own")
    psql("CREATE DATABASE users_own")
    psql("CREATE TABLE notes (body text); INSERT INTO notes VALUES ('keep me')", "users_own")
    yield psql
    psql("DROP DATABASE IF EXISTS users_own")
    if started:
        sh("pg_ctlcluster", *main, "stop")
    if made:
        sh("pg_dropcluster", *main)


def sh(*cmd: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, tail(proc)
    return proc


def test_down_purge_backs_up_then_deletes_the_data(stack_dir, users_own_database):
    proc = make(stack_dir, "down", "PURGE=1", "CONFIRM=local")
    assert proc.returncode == 0, tail(proc)
    (backup,) = (stack_dir / "backups" / "local").iterdir()
    names = {p.name for p in backup.iterdir()}
    assert {"tracking.dump", "auth.dump", "artifacts.tar.gz"} <= names, names
    assert {"bucket-ray-checkpoints.tar.gz", "bucket-datasets.tar.gz"} <= names, names
    assert not state(stack_dir).exists()
    assert not Path("/var/lib/seaweedfs").exists()  # the buckets
    assert not Path("/var/lib/postgresql/15/mlops").exists()  # the stack's databases
    assert not Path("/etc/postgresql/15/mlops").exists()
    # The host's own cluster and the user's database in it are untouched.
    assert users_own_database("SELECT body FROM notes", "users_own") == "keep me"
    assert not [port for port in PORTS if listening(port)]


def test_restore_brings_the_purged_stack_back_and_resume_continues(stack_dir, trained):
    # A fresh stack: new secrets, empty databases and buckets.
    proc = make(stack_dir, "up")
    assert proc.returncode == 0, tail(proc)
    assert mlflow(stack_dir, "experiments/get-by-name?experiment_name=classify")[0] == 404
    (backup,) = (stack_dir / "backups" / "local").iterdir()
    proc = make(stack_dir, "restore", f"BACKUP={backup}", "CONFIRM=local")
    assert proc.returncode == 0, tail(proc)
    assert "are back; the logins are this stack's own" in proc.stdout, tail(proc)
    assert "failing" not in proc.stdout, proc.stdout
    # The runs and the model, read with this stack's own admin password (mlflow() reads it).
    (run,) = classify_runs(stack_dir, f"attributes.run_name = '{trained['name']}'")
    assert run["info"]["run_id"] == trained["run_id"]
    assert run["info"]["status"] == "FINISHED"
    status, body = mlflow(stack_dir, "registered-models/get?name=classify")
    assert status == 200, body
    versions = body["registered_model"]["latest_versions"]
    assert any(v["run_id"] == trained["run_id"] for v in versions), versions
    artifacts = objects(stack_dir, "mlflow-artifacts", "artifacts/")
    assert any(key.endswith("MLmodel") for key in artifacts), artifacts[:20]
    assert objects(stack_dir, "ray-checkpoints", f"checkpoints/{trained['name']}/")

    # The run killed before the purge continues from its restored checkpoint and run record.
    killed = trained["killed"]
    body = s3(stack_dir, "admin").get_object(Bucket="ray-checkpoints", Key=snapshot_key(killed))
    killed_at = json.loads(body["Body"].read())["latest_checkpoint_result"]["metrics"]["step"]
    (before,) = classify_runs(stack_dir, f"attributes.run_name = '{killed}'")
    query = f"metrics/get-history?run_id={before['info']['run_id']}&metric_key=train/loss"
    history = mlflow(stack_dir, query)[1].get("metrics", [])  # none yet: cancelled early
    logged = max((m["step"] for m in history), default=0)
    # Ray resumes from the latest checkpoint its controller registered, which may be older than
    # the last point the cancelled run logged (or newer, when the cancel came before the flush);
    # the history must go on without a gap or a repeat either way. The end is a logging step
    # (logging_steps=5): the last step is always logged too.
    end = (max(logged, killed_at) // 5 + 4) * 5
    # What a root's own run that continued from a checkpoint leaves on this host: Ray's shared
    # lock folder, closed to the stack's ray user, which must not need it.
    Path("/tmp/_ray_lockfiles").mkdir(mode=0o755, exist_ok=True)
    proc = make(stack_dir, "train", "TASK=classify", "RESUME=1", f"RUN_NAME={killed}",
                f"max_steps={end}", timeout=900)  # fmt: skip
    assert proc.returncode == 0, tail(proc)
    assert f"continuing run {killed}" in proc.stdout, tail(proc)
    (run,) = classify_runs(stack_dir, f"attributes.run_name = '{killed}'")
    assert run["info"]["status"] == "FINISHED"
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert tags["resumed_from_step"] == str(killed_at)
    steps = [m["step"] for m in mlflow(stack_dir, query)[1]["metrics"]]
    assert sorted(steps) == list(range(5, end + 1, 5))  # no gap, no repeat


def test_down_purge_after_the_restore_leaves_nothing_running(stack_dir):
    shutil.rmtree(stack_dir / "backups")
    proc = make(stack_dir, "down", "PURGE=1", "CONFIRM=local")
    assert proc.returncode == 0, tail(proc)
    assert not state(stack_dir).exists()
    assert not [port for port in PORTS if listening(port)]
