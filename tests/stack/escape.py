"""The escape suite's shared part: the settings the job gets (the roles' ports, the stack's
buckets, the paths of SeaweedFS's sockets and key files), the job's submission to the stack's
Jobs API with the token as `make train` does, and its report. The attempts themselves are in
escape_job.py; the tests are tests/stack/test_escape.py (local) and
tests/sim/test_sim_stack.py (sim)."""

from __future__ import annotations

import json
import shlex
import shutil
import time
from pathlib import Path

from core.services import role_defaults

JOB = Path(__file__).with_name("escape_job.py")
# The key the S3 gRPC attempt tries to mint (escape_job.py): it must not work afterwards.
MINTED = ("escape-minted-key", "escape-minted-secret-0123456789abcdefghij")
MIN_ATTEMPTS = 12


def ports() -> dict[str, int]:
    """Every port an attempt targets, from the roles' own defaults."""
    sw, pg, ray = role_defaults("seaweedfs"), role_defaults("postgresql"), role_defaults("ray")
    offset = int(sw["seaweedfs_grpc_port_offset"])
    found = {n: int(sw[f"seaweedfs_{n}_port"]) for n in ("master", "volume", "filer", "s3")}
    found.update({f"{name}_grpc": port + offset for name, port in list(found.items())})
    found["postgresql"] = int(pg["postgresql_port"])
    found["ray_gcs"] = int(ray["ray_gcs_port"])
    found["ray_client_server"] = int(ray["ray_client_server_port"])
    found["ray_dashboard"] = int(ray["ray_dashboard_port"])
    found["ray_dashboard_agent_http"] = int(ray["ray_dashboard_agent_listen_port"])
    return found


def job_settings(
    endpoints: dict, node_ip: str, dashboard_host: str, s3_host: str, workers: bool = False
) -> dict:
    """What escape_job.py gets on its command line (no secret: the job has its own)."""
    found = ports()
    sw = role_defaults("seaweedfs")
    data_dir, config_dir = sw["seaweedfs_data_dir"], sw["seaweedfs_config_dir"]
    return {
        "node_ip": node_ip,
        "dashboard_host": dashboard_host,
        "s3_host": s3_host,
        "workers": workers,
        "ports": found,
        "buckets": endpoints["s3_buckets"],
        "paths": {
            "filer_socket": f"{data_dir}/filer.sock",
            "s3_socket": f"{data_dir}/s3.sock",
            "filer_grpc_socket": f"/tmp/seaweedfs-filer-grpc-{found['filer_grpc']}.sock",
            "master_grpc_socket": f"/tmp/seaweedfs-master-grpc-{found['master_grpc']}.sock",
            "s3_grpc_socket": f"/tmp/seaweedfs-s3-grpc-{found['s3_grpc']}.sock",
            "s3_identities": f"{config_dir}/s3.json",
            "seaweedfs_security": f"{config_dir}/security.toml",
            "postgresql_socket": f"/var/run/postgresql/.s.PGSQL.{found['postgresql']}",
            "mlflow_backup_env": "/etc/mlflow/backup.env",
        },
    }


def run_job(endpoints: dict, settings: dict, workdir: Path, monkeypatch) -> str:
    """Submit escape_job.py as a Ray job with the stack's token; its whole log."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    shutil.copy(JOB, workdir / JOB.name)
    token_file = endpoints["ray_auth_token_file"]
    # Set the mode explicitly (a stray ~/.ray/auth_token flips it silently), as training does.
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", token_file)
    token = Path(token_file).read_text().strip()
    client = JobSubmissionClient(
        endpoints["ray_address"], headers={"Authorization": f"Bearer {token}"}
    )
    job = client.submit_job(
        entrypoint=f"python {JOB.name} {shlex.quote(json.dumps(settings))}",
        runtime_env={"working_dir": str(workdir)},
    )
    final = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
    deadline = time.monotonic() + 300
    while (status := client.get_job_status(job)) not in final:
        assert time.monotonic() < deadline, f"job {job} still {status} after 300 s"
        time.sleep(1)
    logs = client.get_job_logs(job)
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    return logs


def outcomes(logs: str) -> tuple[list[dict], list[dict]]:
    """The attempts and the front doors the job printed."""
    lines = logs.splitlines()
    attempts = [json.loads(line[7:]) for line in lines if line.startswith("ESCAPE ")]
    doors = [json.loads(line[11:]) for line in lines if line.startswith("FRONT_DOOR ")]
    return attempts, doors


def report(attempts: list[dict], doors: list[dict], target: str) -> None:
    """One line per attempt and per front door, then the counts."""
    for a in attempts:
        mark = "blocked" if a["blocked"] else "ESCAPED"
        print(f"{mark}  [{a['where']}] {a['name']} ({a['how']}): {a['detail']}")
    for d in doors:
        mark = "open  " if d["open"] else "CLOSED"
        print(f"{mark}  [{d['where']}] front door: {d['name']}: {d['detail']}")
    blocked = sum(a["blocked"] for a in attempts)
    print(f"escape attempts on {target}: {len(attempts)} tried, {blocked} blocked")
