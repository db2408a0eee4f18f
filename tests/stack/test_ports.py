"""What the converged local stack listens on, against what the roles say: Ray's worker range
shares no port with any service (a worker holding one would keep that service from starting);
every port of the stack answers this machine only, never another network namespace on a veth
to it; and no stack service starts before its firewall rules are loaded."""

from __future__ import annotations

import ipaddress
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from stackenv import STACK_PROGRAMS, STACK_TABLES, nft_tables, supervisor_status

from core.services import role_defaults

# Users the roles run the stack's services as (their processes' listening ports are the stack's).
STACK_USERS = {"ray", "seaweedfs", "mlflow", "postgres"}
VETH_POOL = ipaddress.ip_network("10.97.0.0/16")
PROBE = textwrap.dedent("""
    import json, socket, sys
    from concurrent.futures import ThreadPoolExecutor
    def knock(target):
        try:
            socket.create_connection(tuple(target), timeout=2).close()
            return True
        except OSError:
            return False
    targets = json.loads(sys.argv[1])
    with ThreadPoolExecutor(32) as pool:
        print(json.dumps(list(pool.map(knock, targets))))
""")


def worker_range() -> range:
    ray = role_defaults("ray")
    return range(int(ray["ray_min_worker_port"]), int(ray["ray_max_worker_port"]) + 1)


def service_ports() -> dict[int, str]:
    """Every fixed port a role declares, with whose it is."""
    found: dict[int, str] = {}
    sw = role_defaults("seaweedfs")
    offset = int(sw["seaweedfs_grpc_port_offset"])
    for name in ("master", "volume", "filer", "s3"):
        port = int(sw[f"seaweedfs_{name}_port"])
        found[port] = f"SeaweedFS {name}"
        found[port + offset] = f"SeaweedFS {name} gRPC"
    found[int(role_defaults("postgresql")["postgresql_port"])] = "PostgreSQL"
    found[int(role_defaults("mlflow")["mlflow_port"])] = "MLflow"
    for key, value in role_defaults("ray").items():
        if key.endswith("_port") and "worker" not in key:
            found[int(value)] = f"Ray {key}"
    return found


def listeners() -> list[dict]:
    """Every listening TCP socket of a stack user's process: address, port, user, process."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        fields = line.split()
        address, port = fields[3].rsplit(":", 1)
        for pid in map(int, re.findall(r"pid=(\d+)", line)):
            try:
                uid = Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[0]
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (FileNotFoundError, IndexError):
                continue
            user = pwd.getpwuid(int(uid)).pw_name
            if user in STACK_USERS:
                found.append({"address": address.strip("[]"), "port": int(port), "user": user,
                              "pid": pid, "cmd": cmdline[:120]})  # fmt: skip
                break
    return found


def test_ray_worker_range_is_disjoint_from_every_service_port(stack):
    """No declared port of any role is in Ray's worker range or the kernel's ephemeral range,
    and what listens agrees: every port a stack process holds is a declared one, or one of Ray's
    own processes' in the worker range (its workers, the agent's core worker)."""
    workers, declared = worker_range(), service_ports()
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    print(f"Ray worker range {workers.start}-{workers.stop - 1}; ephemeral {low}-{high}")
    assert [f"{port} ({name})" for port, name in declared.items() if port in workers] == []
    assert workers.stop - 1 < low  # no worker port a client socket may hold
    assert [f"{port} ({name})" for port, name in declared.items() if low <= port <= high] == []
    held = listeners()
    for item in held:
        print(f"{item['address']}:{item['port']} {item['user']} {item['cmd'][:70]}")
    assert {i["port"] for i in held} & set(declared)
    undeclared = [
        i for i in held
        if i["port"] not in declared and not (i["user"] == "ray" and i["port"] in workers)
    ]  # fmt: skip
    assert undeclared == [], undeclared


def _free_subnet() -> ipaddress.IPv4Network:
    routes = json.loads(subprocess.run(["ip", "-j", "-4", "route"], capture_output=True,
                                       text=True, check=True).stdout)  # fmt: skip
    taken = [ipaddress.ip_network(r["dst"]) for r in routes if r["dst"] != "default"]
    for candidate in VETH_POOL.subnets(new_prefix=30):
        if not any(candidate.overlaps(t) for t in taken):
            return candidate
    raise AssertionError(f"every /30 of {VETH_POOL} overlaps a route of this machine")


@pytest.fixture
def neighbour(stack):
    """A network namespace on a veth to this machine, routed to this machine's own addresses
    where the stack listens (the veth's, and each one a stack process listens on: Ray's node
    address) and nowhere else. Yields its name and those addresses."""
    name, link = f"neighbour{os.getpid()}", f"nb{os.getpid()}"
    subnet = _free_subnet()
    here, there = (str(a) for a in list(subnet.hosts())[:2])
    named = {i["address"].removeprefix("::ffff:") for i in listeners()}
    own = sorted(
        a for a in named
        if ":" not in a and a not in ("*", "0.0.0.0") and not ipaddress.ip_address(a).is_loopback
    )  # fmt: skip
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "link", "add", link, "type", "veth", "peer", "name", "eth0",
                        "netns", name], check=True)  # fmt: skip
        subprocess.run(["ip", "addr", "add", f"{here}/30", "dev", link], check=True)
        subprocess.run(["ip", "link", "set", link, "up"], check=True)
        for args in (["addr", "add", f"{there}/30", "dev", "eth0"], ["link", "set", "eth0", "up"],
                     ["link", "set", "lo", "up"]):  # fmt: skip
            subprocess.run(["ip", "-n", name, *args], check=True)
        for address in own:
            subprocess.run(["ip", "-n", name, "route", "add", f"{address}/32", "via", here],
                           check=True)  # fmt: skip
        yield name, [here, *own]
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)
        subprocess.run(["ip", "link", "delete", link], capture_output=True)


def test_the_local_stack_answers_this_machine_only(stack, neighbour):
    name, addresses = neighbour
    ports = sorted({i["port"] for i in listeners()} | set(service_ports()))
    # A listener of the test's own on every address shows the neighbour does reach this machine.
    with socket.socket() as control:
        control.bind(("0.0.0.0", 0))
        control.listen()
        open_port = control.getsockname()[1]
        targets = [[a, p] for a in addresses for p in [open_port, *ports]]
        probe = ["ip", "netns", "exec", name, sys.executable, "-c", PROBE, json.dumps(targets)]
        proc = subprocess.run(probe, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    answered = {tuple(t): ok for t, ok in zip(targets, json.loads(proc.stdout), strict=True)}
    for (address, port), ok in sorted(answered.items()):
        print(f"neighbour -> {address}:{port}: {'answers' if ok else 'no answer'}")
    assert all(answered[(a, open_port)] for a in addresses), "the neighbour reaches nothing here"
    assert [t for t, ok in answered.items() if ok and t[1] != open_port] == []


def _wait(predicate, timeout: float = 90) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(1)
    return True


def _answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_no_stack_service_starts_before_its_firewall_rules(stack, tmp_path):
    """Every start of a program (supervisord's own, a restart after a crash) goes through the
    guard: it loads the rules first, and a command whose rules do not load does not run."""
    # PostgreSQL restarts quickest; SeaweedFS's own table is checked the same way in its
    # molecule scenario.
    program, table = "postgresql", "stack_firewall"
    assert program in STACK_PROGRAMS and table in STACK_TABLES
    config_dir = Path(role_defaults("common")["common_config_dir"])
    subprocess.run(["nft", "delete", "table", "inet", table], check=True)
    subprocess.run(["supervisorctl", "restart", program], capture_output=True, timeout=120)
    assert table in nft_tables()  # loaded again before PostgreSQL ran
    assert _wait(lambda: supervisor_status().get(program) == "RUNNING", 60)
    assert _wait(lambda: _answers(int(role_defaults("postgresql")["postgresql_port"])))

    # The guard itself, with rules that do not load and with rules that do.
    # (the marker in a folder of /tmp that nobody may write: pytest's own are root's only)
    shared = Path(tempfile.mkdtemp(prefix="guard-"))
    shared.chmod(0o777)
    guard, marker = config_dir / "start-service", shared / "ran"
    broken = tmp_path / "broken.nft"
    broken.write_text("table inet stack_firewall { this is not a rule set }\n")
    ran = subprocess.run([guard, "nobody", "nogroup", str(broken), "touch", str(marker)],
                         capture_output=True, text=True)  # fmt: skip
    print(ran.stderr.strip().splitlines()[-1])
    assert ran.returncode != 0 and not marker.exists()
    rules = config_dir / "stack_firewall.nft"
    ran = subprocess.run([guard, "nobody", "nogroup", str(rules), "touch", str(marker)])
    try:
        assert ran.returncode == 0 and marker.owner() == "nobody"
    finally:
        shutil.rmtree(shared)
