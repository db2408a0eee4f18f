"""What a sim stack is made of (names, addresses) and its record, `.stack/<name>/sim.json`.

The record is written before anything is created and updated as hosts start, so `make down`
after a crash knows every namespace, interface, route and process `make up` may have made."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core.state import DamagedState
from stack.state import Stack

HEAD = "head"
# Host numbers on the test subnet: the head is .1, workers .2, .3, ...; the controller's end of
# its link into the test network is .254 (it is not a stack host, and the firewall treats it
# as an outsider that may use SSH only).
HEAD_HOST_NUMBER = 1
CONTROLLER_HOST_NUMBER = 254
MAX_WORKERS = 100


def worker_name(index: int) -> str:
    return f"worker-{index}"


@dataclass
class Process:
    """A process as seen from the root PID namespace; the start time guards against a PID
    reused by an unrelated process after a crash or reboot."""

    pid: int
    start_time: int

    @classmethod
    def of(cls, pid: int) -> Process | None:
        start = start_time(pid)
        return None if start is None else cls(pid, start)

    def alive(self) -> bool:
        return start_time(self.pid) == self.start_time


@dataclass
class Host:
    name: str
    address: str
    netns: str
    # The host's init (PID 1 of its PID namespace); `nsenter --target` it to run inside.
    init: Process | None = None

    @property
    def is_gateway(self) -> bool:
        return self.name == HEAD


@dataclass
class Cluster:
    stack_name: str
    subnet: str
    bridge_netns: str
    controller_link: str
    controller_address: str
    hosts: list[Host]
    # Extra namespaces attached to the test network that are not stack hosts (test probes).
    attached: dict[str, str] = field(default_factory=dict)
    # Mount points this stack created in the root file system (empty directories the hosts
    # mount their private folders on); removed again by `down` when still empty.
    created_mount_points: list[str] = field(default_factory=list)
    # Whether this stack's first `ip netns add` created /run/netns (a mount of its own): then
    # `down` unmounts it again once no namespace is left in it.
    created_netns_dir: bool = False

    @property
    def head(self) -> Host:
        return next(h for h in self.hosts if h.name == HEAD)

    @property
    def workers(self) -> list[Host]:
        return [h for h in self.hosts if h.name != HEAD]

    @property
    def prefix_length(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)


def plan(stack: Stack, subnet: ipaddress.IPv4Network, workers: int) -> Cluster:
    """Names and addresses of a new sim cluster on `subnet` (nothing is created)."""
    base = f"stack-{stack.name}"

    def address(number: int) -> str:
        return str(subnet.network_address + number)

    hosts = [Host(HEAD, address(HEAD_HOST_NUMBER), f"{base}-{HEAD}")]
    for i in range(1, workers + 1):
        name = worker_name(i)
        hosts.append(Host(name, address(HEAD_HOST_NUMBER + i), f"{base}-{name}"))
    return Cluster(
        stack_name=stack.name,
        subnet=str(subnet),
        bridge_netns=f"{base}-net",
        controller_link=controller_link_name(stack.name),
        controller_address=address(CONTROLLER_HOST_NUMBER),
        hosts=hosts,
    )


def controller_link_name(stack_name: str) -> str:
    """The root namespace's end of the link to the test network (interface names: 15 chars)."""
    name = f"{stack_name}-sim"
    if len(name) <= 15:
        return name
    return "sim-" + hashlib.sha1(stack_name.encode()).hexdigest()[:11]


def record_file(stack: Stack) -> Path:
    return stack.folder / "sim.json"


def hosts_folder(stack: Stack) -> Path:
    """Where each host's private folders live on this machine's disk."""
    return stack.folder / "hosts"


def load(stack: Stack) -> Cluster | None:
    path = record_file(stack)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        hosts = [
            Host(h["name"], h["address"], h["netns"], Process(**h["init"]) if h["init"] else None)
            for h in data.pop("hosts")
        ]
        return Cluster(hosts=hosts, **data)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise DamagedState(
            f"{path} cannot be read (truncated?); `make down` removes the sim hosts by their "
            f"names without it, then `make up` makes new ones"
        ) from None


def save(stack: Stack, cluster: Cluster) -> None:
    stack.create()
    path = record_file(stack)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(cluster), indent=2) + "\n")
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def forget(stack: Stack) -> None:
    record_file(stack).unlink(missing_ok=True)


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat), or
    None when no such process runs."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None  # exited, not yet collected by its parent: gone for our purposes
    return int(fields[19])
