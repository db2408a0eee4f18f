"""The fixed ports a `local` stack listens on (the roles' defaults, through core.services),
checked before `up` and after `down`."""

from __future__ import annotations

import socket
import time

from core.services import local_ports


def taken(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


def taken_ports() -> dict[int, str]:
    return {port: name for port, name in local_ports().items() if taken(port)}


def wait_free(timeout: float = 60) -> dict[int, str]:
    """Wait for the stack's processes to let go of their ports; returns those still held."""
    deadline = time.monotonic() + timeout
    while (busy := taken_ports()) and time.monotonic() < deadline:
        time.sleep(1)
    return busy
