"""The fixed ports a `local` stack listens on (ARCHITECTURE.md), checked before `up` and
after `down`."""

from __future__ import annotations

import socket
import time

LOCAL_PORTS = {
    5432: "PostgreSQL",
    5000: "MLflow",
    6379: "Ray GCS",
    8265: "Ray dashboard and Jobs API",
    10001: "Ray client server",
    52365: "Ray dashboard agent",
}


def taken(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


def taken_ports() -> dict[int, str]:
    return {port: name for port, name in LOCAL_PORTS.items() if taken(port)}


def wait_free(timeout: float = 60) -> dict[int, str]:
    """Wait for the stack's processes to let go of their ports; returns those still held."""
    deadline = time.monotonic() + timeout
    while (busy := taken_ports()) and time.monotonic() < deadline:
        time.sleep(1)
    return busy
