"""training/rayjobs.py against a real Ray head (token auth on, as on a stack): a job's working
dir goes up as Ray's own package, its log comes back, its status ends SUCCEEDED; a job is
stopped; an unknown job and a wrong token are told apart.

The head runs in a network namespace of its own (`unshare -n`), so it takes no port of this
machine's, and the whole check runs there; it prints what it saw as JSON."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare"
)

DRIVER = r"""
import json, os, subprocess, sys, time
from pathlib import Path
import psutil
from training.rayjobs import JobNotFound, JobsClient

tmp = Path(sys.argv[1])  # short: Ray's socket paths must fit
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
token = tmp / "token"
token.write_text("a" * 32 + "\n")
env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
       "RAY_USAGE_STATS_ENABLED": "0", "HOME": str(tmp)}
ray = str(Path(sys.executable).with_name("ray"))
# In the foreground (--block), so that ending it ends the processes it started: never `ray
# stop`, which ends every Ray process on the machine, namespaces or not.
head = subprocess.Popen([ray, "start", "--head", "--block", "--num-cpus=1",
                         "--dashboard-host=127.0.0.1", f"--temp-dir={tmp / 'ray'}",
                         "--disable-usage-stats"], env=env, stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL)
seen = {}
try:
    jobs = JobsClient("http://127.0.0.1:8265", token.read_text().strip())
    deadline = time.monotonic() + 120
    while True:
        try:
            seen["version"] = jobs.version()
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    work = tmp / "work"
    (work / "pkg").mkdir(parents=True)
    (work / "pkg" / "data.txt").write_text("from the working dir\n")
    entry = ("python -c \"import os; print(open('pkg/data.txt').read().strip()); "
             "print(os.environ['ANSWER'])\"")
    jobs.submit_job(entrypoint=entry, submission_id="ok-1",
                    runtime_env={"working_dir": str(work), "env_vars": {"ANSWER": "42"}})
    seen["log"] = "".join(jobs.tail_job_logs("ok-1"))
    seen["status"] = jobs.get_job_status("ok-1")
    jobs.submit_job(entrypoint="sleep 600", submission_id="long-1", runtime_env={})
    while jobs.get_job_status("long-1") == "PENDING":
        time.sleep(0.5)
    seen["stopped"] = jobs.stop_job("long-1")
    while jobs.get_job_status("long-1") not in ("STOPPED", "FAILED", "SUCCEEDED"):
        time.sleep(0.5)
    seen["long"] = jobs.get_job_status("long-1")
    try:
        jobs.get_job_status("nope")
        seen["unknown"] = "found"
    except JobNotFound:
        seen["unknown"] = "not found"
    try:
        JobsClient("http://127.0.0.1:8265", "b" * 32).version()
        seen["wrong token"] = "answered"
    except RuntimeError as exc:
        seen["wrong token"] = str(exc)
finally:
    head.terminate()
    head.wait(timeout=60)
    # Whatever outlived it, found by its temp folder, by PID.
    for proc in psutil.process_iter(["cmdline"]):
        if proc.pid != os.getpid() and str(tmp) in " ".join(proc.info["cmdline"] or []):
            proc.kill()
print(json.dumps(seen))
"""


def test_the_jobs_client_speaks_a_real_ray_heads_jobs_api():
    with tempfile.TemporaryDirectory(prefix="rayjobs-", dir="/tmp") as tmp:
        proc = subprocess.run(
            ["unshare", "-n", sys.executable, "-c", DRIVER, tmp],
            cwd=REPO, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    print(seen)
    assert seen["version"]
    assert "from the working dir\n42\n" in seen["log"], seen
    assert seen["status"] == "SUCCEEDED"
    assert seen["stopped"] is True and seen["long"] == "STOPPED"
    assert seen["unknown"] == "not found"
    assert "401" in seen["wrong token"] or "403" in seen["wrong token"], seen
