"""CLOUD=sim, the hosts themselves (SIM_HOSTS_ONLY=1): `make up` with 2 workers -> Ansible
reaches every host through the head with pinned host keys -> the hosts' folders are private ->
the host firewall admits SSH from the controller (the allowed range) and the stack's hosts only,
nothing from an outsider on the test network, and the stack's ports from the stack's hosts ->
`make down` leaves nothing behind, twice; a `make up` killed half-way is cleaned.

The tests run in file order and share one sim stack (module fixture)."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from core.services import SERVICES
from stack.sim import cluster as sim_cluster
from stack.sim import hosts, network, sshd
from stack.state import Stack
from tests.conftest import REPO, cli_env
from tests.sim.conftest import ANSIBLE_VENV, sim_cli

STACK = "simtest"
KILLED = "simkill"
ANSIBLE_DIR = REPO / "ansible"
FIREWALL_DEFAULTS = ANSIBLE_DIR / "roles" / "common" / "defaults" / "main.yml"
FIREWALL_PLAYBOOK = Path(__file__).with_name("firewall.yml")
# Folders a host keeps to itself: temp, home, logs, shared memory, a role's data and config.
PRIVATE_FOLDERS = [
    "/tmp",
    "/var/tmp",
    "/root",
    "/var/log",
    "/dev/shm",
    "/var/lib/ray",
    "/etc/ray",
    "/var/lib/postgresql",
]
# Never admitted from anyone: PostgreSQL (the services host's own) and a port of nothing.
CLOSED_PORTS = {**SERVICES["postgresql"].port_numbers(), 7777: "not a stack port"}
OUTSIDER = f"stack-{STACK}-outsider"
# These tests are about the hosts: nothing is configured on them (tests/sim/test_sim_stack.py
# runs the stack itself).
HOSTS_ONLY = {"SIM_HOSTS_ONLY": "1"}
OUTSIDER_HOST_NUMBER = 200

# Listens on the given ports until its stdin closes; prints the ports the host already uses
# (a connection of its own may hold one of the ephemeral range), which cannot be probed.
LISTENER = """
import errno, json, socket, sys
socks, busy = [], []
for port in map(int, sys.argv[1:]):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("0.0.0.0", port))
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        busy.append(port)
        continue
    s.listen(64)
    socks.append(s)
print("listening", json.dumps(busy), flush=True)
sys.stdin.read()
"""
# Tries a TCP connection to each [address, port]; prints whether each was accepted.
PROBE = """
import json, socket, sys
from concurrent.futures import ThreadPoolExecutor
def knock(target):
    try:
        socket.create_connection(tuple(target), timeout=3).close()
        return True
    except OSError:
        return False
with ThreadPoolExecutor(64) as pool:
    print(json.dumps(list(pool.map(knock, json.loads(sys.argv[1])))))
"""


def stack_ports() -> dict[int, str]:
    """The ports the firewall admits from stack hosts, by name (from the role's defaults), plus
    one port from each range it admits."""
    defaults = yaml.safe_load(FIREWALL_DEFAULTS.read_text())
    ray = defaults["stack_ray_ports"]
    ports = {port: f"ray {name}" for name, port in ray.items() if not name.startswith("worker")}
    ports.update({port: name for name, port in defaults["common_firewall_service_ports"].items()})
    ports[ray["worker_min"]] = "ray worker range, first"
    ports[ray["worker_max"]] = "ray worker range, last"
    ports[40000] = "ephemeral range (torch.distributed)"
    return ports


def ansible_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{ANSIBLE_VENV / 'bin'}:{env['PATH']}"
    env["ANSIBLE_CONFIG"] = str(ANSIBLE_DIR / "ansible.cfg")
    env["ANSIBLE_ROLES_PATH"] = str(ANSIBLE_DIR / "roles")
    env["ANSIBLE_NOCOLOR"] = "1"
    env.update(extra)
    return env


def ansible(*args: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        list(args),
        env=ansible_env(**extra),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
    )


def snapshot() -> dict:
    """What of this machine a sim stack may change: namespaces, links, routes, mounts."""
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return {
        "netns": set(network.netns_list()),
        "links": {line.split(":")[1].strip().split("@")[0] for line in links.splitlines()},
        "routes": [json.dumps(r, sort_keys=True) for r in network.root_routes()],
        "mounts": {
            line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
        },
    }


def leftovers(stack_name: str, state: Path, before: dict, recorded: sim_cluster.Cluster) -> list:
    """Everything of a sim stack still on this machine after `down`, printed check by check."""
    now = snapshot()
    processes = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    found = {
        "ip netns": sorted(now["netns"] - before["netns"]),
        "ip link": sorted(now["links"] - before["links"]),
        "ip route": [r for r in now["routes"] if r not in before["routes"]]
        + network.routes_into(recorded.subnet),
        "mounts": sorted(now["mounts"] - before["mounts"]),
        "processes": [
            line
            for line in processes.splitlines()
            if str(state) in line or "stack/sim/keeper.py" in line or hosts.SSHD_DIR in line
        ]
        + [h.name for h in recorded.hosts if h.init is not None and h.init.alive()],
    }
    for what, items in found.items():
        print(f"after down, {what} of stack {stack_name}: {items or 'nothing'}")
    return [item for items in found.values() for item in items]


@pytest.fixture(scope="module")
def machine_before() -> dict:
    return snapshot()


@pytest.fixture(scope="module")
def sim(sim_state, machine_before):
    """A sim stack with 2 workers, made by `python -m stack up` (CLOUD=sim)."""
    proc = sim_cli(sim_state, "up", STACK_NAME=STACK, SIM_WORKERS="2", **HOSTS_ONLY)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    stack = Stack(STACK, "sim")
    os.environ["STACK_DIR"] = str(sim_state)  # Stack's paths below resolve to the tests' state
    try:
        yield stack, sim_cluster.load(stack)
    finally:
        sim_cli(sim_state, "down", STACK_NAME=STACK)
        os.environ.pop("STACK_DIR", None)


def test_up_makes_a_head_and_two_workers_reachable_only_through_the_head(sim):
    stack, cluster = sim
    assert [h.name for h in cluster.hosts] == ["head", "worker-1", "worker-2"]
    inventory = yaml.safe_load(stack.inventory.read_text())["all"]
    assert set(inventory["children"]["services"]["hosts"]) == {"head"}
    assert set(inventory["children"]["ray_head"]["hosts"]) == {"head"}
    assert set(inventory["children"]["ray_workers"]["hosts"]) == {"worker-1", "worker-2"}
    assert inventory["vars"]["stack_private_addresses"] == [h.address for h in cluster.hosts]
    for name, host_vars in inventory["children"]["ray_workers"]["hosts"].items():
        assert "ProxyCommand=" in host_vars["ansible_ssh_common_args"], name
        assert f"root@{cluster.head.address}" in host_vars["ansible_ssh_common_args"]
    assert oct(sshd.access(stack, cluster).key.stat().st_mode & 0o777) == "0o600"
    # From the controller only the head's address routes into the test network.
    for worker in cluster.workers:
        assert subprocess.run(
            ["ip", "route", "get", worker.address], capture_output=True
        ).returncode
    routes = network.routes_into(cluster.subnet)
    print(f"root namespace routes into {cluster.subnet}: {routes}")
    # The controller's own address aside (table local), one route: to the head.
    (to_head,) = [r for r in routes if r.get("table") != "local" and r.get("type") != "unreachable"]
    assert to_head["dst"] == cluster.head.address
    # Each host knows every stack host by name, at its private address.
    for host in cluster.hosts:
        names = [hosts.hostname(stack, h) for h in cluster.hosts]
        for other, name in zip(cluster.hosts, names, strict=True):
            proc = hosts.run_in(host, ["getent", "hosts", name])
            assert proc.stdout.split()[0] == other.address, (host.name, name, proc.stdout)
        assert hosts.run_in(host, ["hostname"]).stdout.strip() == hosts.hostname(stack, host)
    # And the hosts have no route out of it at all.
    for host in cluster.hosts:
        routes = json.loads(hosts.run_in(host, ["ip", "-4", "-j", "route"]).stdout)
        print(f"routes on {host.name}: {routes}")
        assert [r["dst"] for r in routes] == [cluster.subnet]


def test_every_host_answers_ansible_ping_through_the_head(sim):
    stack, _ = sim
    proc = ansible(
        str(ANSIBLE_VENV / "bin" / "ansible"),
        "-i",
        str(stack.inventory),
        "all",
        "-m",
        "ansible.builtin.ping",
    )
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ("head", "worker-1", "worker-2"):
        assert f"{name} | SUCCESS" in proc.stdout


@pytest.mark.parametrize("host_name", ["head", "worker-1"])
def test_a_changed_host_key_is_refused(sim, tmp_path, host_name):
    stack, cluster = sim
    host = cluster.host(host_name)
    known_hosts = sshd.access(stack, cluster).known_hosts
    pinned = known_hosts.read_text()
    other_key = tmp_path / "other_host_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other_key)], check=True
    )
    kind, blob = Path(f"{other_key}.pub").read_text().split()[:2]
    lines = [
        f"{host.address} {kind} {blob}" if line.startswith(f"{host.address} ") else line
        for line in pinned.splitlines()
    ]
    try:
        known_hosts.write_text("\n".join(lines) + "\n")
        # A connection of its own: a cached master would skip the host key check.
        proc = ansible(
            str(ANSIBLE_VENV / "bin" / "ansible"),
            "-i",
            str(stack.inventory),
            host_name,
            "-m",
            "ansible.builtin.ping",
            "-e",
            f"ansible_control_path_dir={tmp_path / 'cp'}",
        )
    finally:
        known_hosts.write_text(pinned)
    print(proc.stdout + proc.stderr)
    assert proc.returncode != 0
    assert f"{host_name} | UNREACHABLE" in proc.stdout
    assert "Host key verification failed" in proc.stdout + proc.stderr


def test_a_hosts_private_folders_are_its_own(sim):
    stack, cluster = sim
    for host in cluster.hosts:
        writes = "; ".join(
            f"echo {host.name} > {d}/sim-private-{host.name}" for d in PRIVATE_FOLDERS
        )
        proc = subprocess.run(
            sshd.access(stack, cluster).ssh_command(host.address, writes),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
    for host in cluster.hosts:
        listing = "ls -1 " + " ".join(PRIVATE_FOLDERS) + " | grep '^sim-private-' | sort -u"
        proc = subprocess.run(
            sshd.access(stack, cluster).ssh_command(host.address, listing),
            capture_output=True,
            text=True,
            timeout=60,
        )
        print(f"{host.name} sees: {proc.stdout.split()}")
        assert proc.stdout.split() == [f"sim-private-{host.name}"]
    for folder in PRIVATE_FOLDERS:
        seen = (
            sorted(p.name for p in Path(folder).glob("sim-private-*"))
            if Path(folder).is_dir()
            else []
        )
        print(f"the root namespace sees in {folder}: {seen}")
        assert seen == []
    # The controller's stack state (keys, passwords) is hidden from the hosts.
    proc = subprocess.run(
        sshd.access(stack, cluster).ssh_command(cluster.head.address, f"ls -A {stack.folder}"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.stdout.strip() == ""


def test_the_firewall_admits_ssh_from_the_allowed_range_and_stack_ports_from_stack_hosts(sim):
    stack, cluster = sim
    playbook = [
        str(ANSIBLE_VENV / "bin" / "ansible-playbook"),
        "-i",
        str(stack.inventory),
        str(FIREWALL_PLAYBOOK),
    ]
    first = ansible(*playbook)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr
    second = ansible(*playbook)
    assert second.returncode == 0, second.stdout[-3000:]
    for host in cluster.hosts:
        assert f"{host.name}" in second.stdout
        recap = [line for line in second.stdout.splitlines() if line.startswith(f"{host.name} ")]
        assert recap and " changed=0 " in recap[-1], recap  # a second run changes nothing

    admitted = stack_ports()
    ports = {22: "ssh", **admitted, **CLOSED_PORTS}
    # Something listens on every port probed, so a port that does not answer is filtered.
    listeners, busy = [], set()
    for host in cluster.hosts:
        listener, held = _listen(host, [p for p in ports if p != 22])
        listeners.append(listener)
        busy |= {(host.name, port) for port in held}
    print(f"ports already in use on their host, not probed: {sorted(busy)}")
    subnet = ipaddress.ip_network(cluster.subnet)
    outsider_address = str(subnet.network_address + OUTSIDER_HOST_NUMBER)
    cluster.attached[OUTSIDER] = outsider_address
    sim_cluster.save(stack, cluster)  # `down` removes the outsider too
    network.attach(cluster, OUTSIDER, outsider_address, link="outsider")
    try:
        targets = [(h, p) for h in cluster.hosts for p in ports if (h.name, p) not in busy]
        outside = _probe(["ip", "netns", "exec", OUTSIDER], targets)
        inside = {}
        for prober in cluster.hosts:
            others = [(h, p) for h, p in targets if h is not prober]
            inside.update(_probe(hosts.enter(prober), others, prober.name))
    finally:
        for listener in listeners:
            listener.stdin.close()
            listener.wait(timeout=60)
    for (host, port), answered in sorted(outside.items(), key=lambda t: (t[0][0], t[0][1])):
        print(
            f"outsider {outsider_address} -> {host}:{port} ({ports[port]}): "
            f"{'answers' if answered else 'no answer'}"
        )
    for (prober, host, port), answered in sorted(inside.items()):
        print(
            f"stack host {prober} -> {host}:{port} ({ports[port]}): "
            f"{'answers' if answered else 'no answer'}"
        )
    # The outsider is outside the allowed range (the controller's address): nothing answers it.
    assert {k: v for k, v in outside.items() if v} == {}
    # The controller (the allowed range) reaches the head's SSH.
    with socket.create_connection((cluster.head.address, 22), timeout=5):
        pass
    for (prober, host, port), answered in inside.items():
        assert answered == (port == 22 or port in admitted), (prober, host, port)


def test_status_shows_a_silent_host_and_up_repairs_it(sim, sim_state):
    stack, cluster = sim
    worker = cluster.host("worker-1")
    stopped = hosts.run_in(worker, ["sh", "-c", f"kill $(cat {hosts.SSHD_DIR}/sshd.pid)"])
    assert stopped.returncode == 0, stopped.stderr
    status = sim_cli(sim_state, "status", STACK_NAME=STACK)
    print(status.stdout)
    rows = {line.split()[1]: line for line in status.stdout.splitlines() if "│ " in line}
    for host in cluster.hosts:
        assert host.address in rows[host.name]
    assert "no answer" in rows["worker-1"]
    assert "answers" in rows["head"] and "answers" in rows["worker-2"]
    again = sim_cli(sim_state, "up", STACK_NAME=STACK, SIM_WORKERS="2", **HOSTS_ONLY)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("answers") == 3, again.stdout
    # Repaired in place: the same hosts (inits), not a new cluster.
    assert [h.init for h in sim_cluster.load(stack).hosts] == [h.init for h in cluster.hosts]


def test_down_leaves_nothing_and_twice_is_harmless(sim, sim_state, machine_before):
    stack, cluster = sim
    for attempt in ("first", "second"):
        proc = sim_cli(sim_state, "down", STACK_NAME=STACK)
        print(f"{attempt} down: {proc.stdout.strip()}")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert leftovers(STACK, sim_state, machine_before, cluster) == []
    status = sim_cli(sim_state, "status", STACK_NAME=STACK)
    assert status.returncode == 0
    assert "down" in status.stdout


def test_a_killed_up_is_cleaned_by_down_and_repaired_by_up(tmp_path, machine_before):
    state = tmp_path / "state"
    stack = Stack(KILLED, "sim")
    for then in ("down", "up"):
        _kill_up_half_way(state)
        os.environ["STACK_DIR"] = str(state)
        try:
            stale = sim_cluster.load(stack)
        finally:
            os.environ.pop("STACK_DIR", None)
        assert stale is not None
        proc = sim_cli(state, then, STACK_NAME=KILLED, **HOSTS_ONLY)
        print(f"{then} after a killed up: {proc.stdout.strip()}")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        if then == "up":
            assert proc.stdout.count("answers") == 3, proc.stdout
            assert sim_cli(state, "down", STACK_NAME=KILLED).returncode == 0
        assert leftovers(KILLED, state, machine_before, stale) == []


def _kill_up_half_way(state: Path) -> None:
    """Start `python -m stack up`, SIGKILL it as soon as its first host runs."""
    record = state / KILLED / "sim.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "stack", "up"],
        cwd=REPO,
        env=cli_env(state, CLOUD="sim", STACK_NAME=KILLED, SIM_WORKERS="2", **HOSTS_ONLY),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if record.is_file() and json.loads(record.read_text())["hosts"][0]["init"]:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "up ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _listen(host: sim_cluster.Host, ports: list[int]) -> tuple[subprocess.Popen, list[int]]:
    proc = subprocess.Popen(
        hosts.enter(host) + ["python3", "-c", LISTENER, *map(str, ports)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=hosts.HOST_ENV,
    )
    word, _, held = proc.stdout.readline().partition(" ")
    assert word == "listening", word
    return proc, json.loads(held)


def _probe(enter: list[str], targets: list, prober: str | None = None) -> dict:
    addresses = [[h.address, p] for h, p in targets]
    proc = subprocess.run(
        enter + ["python3", "-c", PROBE, json.dumps(addresses)],
        capture_output=True,
        text=True,
        timeout=120,
        env=hosts.HOST_ENV,
    )
    assert proc.returncode == 0, proc.stderr
    answers = json.loads(proc.stdout)
    keys = [(h.name, p) if prober is None else (prober, h.name, p) for h, p in targets]
    return dict(zip(keys, answers, strict=True))


def test_a_stack_whose_state_folder_was_deleted_is_still_removed_by_down(tmp_path, machine_before):
    state = tmp_path / "state"
    assert sim_cli(state, "up", STACK_NAME=KILLED, SIM_WORKERS="1", **HOSTS_ONLY).returncode == 0
    os.environ["STACK_DIR"] = str(state)
    try:
        recorded = sim_cluster.load(Stack(KILLED, "sim"))
    finally:
        os.environ.pop("STACK_DIR", None)
    shutil.rmtree(state)
    proc = sim_cli(state, "down", STACK_NAME=KILLED)
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "lost its state folder" in proc.stdout
    assert leftovers(KILLED, state, machine_before, recorded) == []


@pytest.mark.parametrize("workers", ["x", "0", "101"])
def test_a_bad_worker_count_is_one_line_and_makes_nothing(tmp_path, workers):
    before = set(network.netns_list())
    proc = sim_cli(tmp_path / "state", "up", STACK_NAME=KILLED, SIM_WORKERS=workers)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line == f"error: SIM_WORKERS={workers} is not usable; give a number from 1 to 100"
    assert set(network.netns_list()) == before
    assert not (tmp_path / "state").exists()
