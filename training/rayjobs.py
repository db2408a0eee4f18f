"""The stack's Ray Jobs API over plain HTTP, so that submitting a job needs no Ray on this
machine (the controller's environment holds no training stack).

The routes and payloads are Ray 2.60's own (ray/dashboard/modules/job/job_head.py:
PUT /api/packages/{protocol}/{name} for the working dir's zip, POST /api/jobs/ with a
JobSubmitRequest, GET /api/jobs/{id}, GET /api/jobs/{id}/logs, POST /api/jobs/{id}/stop), with
the cluster's token as a Bearer header. The working dir goes up as Ray's own client sends it: a
zip of the folder's files named gcs://_ray_pkg_<content hash>.zip
(ray/_private/runtime_env/packaging.py)."""

from __future__ import annotations

import hashlib
import io
import json
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

FINAL = ("SUCCEEDED", "FAILED", "STOPPED")
POLL_S = 1.0  # how often a followed job's log is read


class JobNotFound(Exception):
    pass


class JobsClient:
    def __init__(self, address: str, token: str, timeout: float = 30) -> None:
        self.address = address.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"}
        self.timeout = timeout

    def _call(self, method: str, path: str, body: bytes | None = None, kind: str = "") -> bytes:
        headers = {**self.headers, **({"Content-Type": kind} if kind else {})}
        request = urllib.request.Request(
            self.address + path, data=body, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read()
        except urllib.error.HTTPError as err:
            text = err.read().decode(errors="replace").strip()
            if err.code == 404 and "/api/jobs/" in path:
                raise JobNotFound(path) from None
            raise RuntimeError(
                f"Ray answered {err.code} to {method} {path}: {text[-300:]}"
            ) from None

    def _json(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        answer = self._call(method, path, data, "application/json" if data else "")
        return json.loads(answer or b"{}")

    def version(self) -> str:
        return self._json("GET", "/api/version").get("ray_version", "")

    # --- submitting ---------------------------------------------------------------------
    def upload(self, folder: Path) -> str:
        """The folder's files as Ray's package URI, uploaded unless the cluster has it."""
        data = _zip(folder)
        name = f"_ray_pkg_{hashlib.sha1(data).hexdigest()}.zip"
        try:
            self._call("GET", f"/api/packages/gcs/{name}")
        except RuntimeError:  # 404: not there yet
            self._call("PUT", f"/api/packages/gcs/{name}", data, "application/octet-stream")
        return f"gcs://{name}"

    def submit_job(self, entrypoint: str, submission_id: str, runtime_env: dict) -> str:
        env = dict(runtime_env)
        if env.get("working_dir") and not str(env["working_dir"]).startswith("gcs://"):
            env["working_dir"] = self.upload(Path(env["working_dir"]))
        body = {"entrypoint": entrypoint, "submission_id": submission_id, "runtime_env": env}
        return self._json("POST", "/api/jobs/", body)["submission_id"]

    # --- following ----------------------------------------------------------------------
    def get_job_info(self, job_id: str) -> dict:
        return self._json("GET", f"/api/jobs/{job_id}")

    def get_job_status(self, job_id: str) -> str:
        return str(self.get_job_info(job_id)["status"])

    def tail_job_logs(self, job_id: str) -> Iterator[str]:
        """The job's log as it grows, in whole lines, until the job ends."""
        shown = 0
        while True:
            ended = self.get_job_status(job_id) in FINAL
            logs = self._json("GET", f"/api/jobs/{job_id}/logs").get("logs", "")
            upto = len(logs) if ended else logs.rfind("\n") + 1
            if upto > shown:
                yield logs[shown:upto]
                shown = upto
            if ended:
                return
            time.sleep(POLL_S)

    def stop_job(self, job_id: str) -> bool:
        return bool(self._json("POST", f"/api/jobs/{job_id}/stop").get("stopped"))


def _zip(folder: Path) -> bytes:
    """Every file under `folder`, by its path relative to it, in a stable order (so the same
    tree gives the same package name)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(str(path.relative_to(folder)), date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = (path.stat().st_mode & 0o777) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return buffer.getvalue()
