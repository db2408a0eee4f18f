"""`make up`'s last step on Chameleon: the services checked from this machine the way a user
reaches them, through an SSH tunnel of the check's own. It forwards free local ports (an open
`make tunnel`, or another program on 5000/8265/8333, is no matter) and is closed afterwards.
PostgreSQL is not tunnelled; MLflow's check reads the experiments, which goes through it."""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import subprocess
import time
from collections.abc import Iterator

from core.errors import UserError
from core.state import Endpoints
from stack import access, health

STARTUP_S = 30  # for ssh to log in through the gateway and listen on every forwarded port


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def tunnel(way_in: access.Access, services_address: str) -> Iterator[dict[str, int]]:
    """SSH forwards from free local ports to the tunnelled services; yields {endpoints field:
    local port}. The ssh process is this function's own and is ended on the way out."""
    fields = [field for _, _, _, field in access.TUNNELLED]
    local = dict(zip(fields, free_ports(len(fields)), strict=True))
    cmd = access.tunnel_command(way_in, services_address, list(local.values()))
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + STARTUP_S
        while not all(_answers(port) for port in local.values()):
            if proc.poll() is not None:
                last = (proc.stderr.read().strip().splitlines() or ["no output"])[-1]
                raise UserError(
                    f"the SSH tunnel for the health check ended (exit {proc.returncode}: {last}); "
                    "`make up` again retries it"
                )
            if time.monotonic() > deadline:
                raise UserError(
                    f"the SSH tunnel for the health check did not open within {STARTUP_S} s; "
                    "`make up` again retries it"
                )
            time.sleep(0.5)
        yield local
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def check(
    endpoints: Endpoints, way_in: access.Access, services_address: str, timeout: float = 90
) -> list[health.Check]:
    """The MLflow, Ray and object store checks through the tunnel, polled until all pass or
    `timeout`; each check shows the URL `make tunnel` gives the service."""
    usual = {field: getattr(endpoints, field) for _, _, _, field in access.TUNNELLED}
    with tunnel(way_in, services_address) as local:
        through = {
            field: f"http://127.0.0.1:{port}"
            for field, port in local.items()
            if field != "s3_endpoint" or endpoints.object_store == "seaweedfs"
        }
        probe = dataclasses.replace(endpoints, **through)
        deadline = time.monotonic() + timeout
        while True:
            checks = [health.mlflow(probe), health.ray(probe)]
            if probe.s3_endpoint:
                checks.append(health.object_store(probe))
            if all(c.healthy for c in checks) or time.monotonic() > deadline:
                break
            time.sleep(3)
    by_url = {through[field]: usual[field] for field in through}
    return [dataclasses.replace(c, url=by_url.get(c.url, c.url)) for c in checks]


def require_healthy(checks: list[health.Check], console, up_command: str) -> None:
    """Print each check on a line; a failing one is the one error line `make up` ends with."""
    for c in checks:
        mark = "ok" if c.healthy else "failing"
        console.print(f"  {c.service:14} {mark:8} {c.url:24} {c.detail}", markup=False)
    if failing := [c for c in checks if not c.healthy]:
        c = failing[0]
        raise UserError(
            f"{c.service} is not healthy: {c.detail}; its log on the services host: {c.log} "
            f"(`{up_command}` again repairs what drifted)"
        )
