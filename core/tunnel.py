"""SSH tunnels to a stack's services, for as long as a command needs them.

On `sim` and `chameleon` the services answer the stack's own hosts only; this machine reaches
them through SSH forwards via the gateway. `make up` records how in the endpoints file
(`Endpoints.tunnel`: the ssh arguments to the gateway and each service's private address), so
any command that needs the services, the stack's and the training package's alike, opens the
forwards it needs itself on free local ports and closes them when it ends, Ctrl-C included. A
tunnel the user already has open (`make tunnel`) is used as it is."""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from core.errors import UserError
from core.state import Endpoints

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
def forwarding(ssh: list[str], forwards: dict[str, str], why: str) -> Iterator[dict[str, int]]:
    """`ssh -N` forwarding a free local port to each of `forwards` ({name: "host:port"})
    through the gateway that `ssh` (its arguments, ending in user@gateway) reaches; yields
    {name: local port}. The ssh process is this function's own, ended on the way out."""
    local = dict(zip(forwards, free_ports(len(forwards)), strict=True))
    args = []
    for name, port in local.items():
        args += ["-L", f"127.0.0.1:{port}:{forwards[name]}"]
    cmd = ["ssh", "-N", "-o", "ExitOnForwardFailure=yes", *args, *ssh]
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + STARTUP_S
        while not all(_answers(port) for port in local.values()):
            if proc.poll() is not None:
                last = (proc.stderr.read().strip().splitlines() or ["no output"])[-1]
                raise UserError(
                    f"the SSH tunnel for {why} ended (exit {proc.returncode}: {last}); the "
                    "gateway may be unreachable: `make status` shows the stack"
                )
            if time.monotonic() > deadline:
                raise UserError(
                    f"the SSH tunnel for {why} did not open within {STARTUP_S} s; "
                    "`make status` shows the stack"
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


@contextlib.contextmanager
def opened(endpoints: Endpoints, why: str) -> Iterator[Endpoints]:
    """The endpoints as this command reaches them: as they are on `local` or through a tunnel
    the user has open, else through forwards of the command's own."""
    if not endpoints.tunnel or _user_tunnel(endpoints):
        yield endpoints
        return
    with forwarding(endpoints.tunnel["ssh"], endpoints.tunnel["forwards"], why) as local:
        yield dataclasses.replace(
            endpoints, **{field: f"http://127.0.0.1:{port}" for field, port in local.items()}
        )


def _user_tunnel(endpoints: Endpoints) -> bool:
    """Whether `make tunnel` is open: the stack's Ray answers at the usual local address and
    takes this stack's token (another program, or another stack's tunnel, would not)."""
    token = Path(endpoints.ray_auth_token_file).read_text().strip()
    request = urllib.request.Request(
        endpoints.ray_address.rstrip("/") + "/api/jobs/",
        headers={"Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False
