"""`make up|status|down CLOUD=sim`: the hosts (namespaces, network, sshd, the inventory), then
the stack on them: the software installed once on this machine, which the hosts share
(ansible/shared_software.yml), site.yml over SSH through the head, and the services checked
through an SSH tunnel as on Chameleon. SIM_HOSTS_ONLY=1 stops after the hosts. The stack CLI
calls these for CLOUD=sim."""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import time
from collections.abc import Callable

from rich.console import Console
from rich.table import Table

from core.errors import UserError
from core.flags import flag
from stack import access, health, playbook, probe
from stack.sim import cluster as sim_cluster
from stack.sim import hosts, inventory, network, sshd
from stack.sim.cluster import MAX_WORKERS, Cluster
from stack.sim.teardown import tear_down, tear_down_unrecorded
from stack.state import Stack

DEFAULT_WORKERS = 2
# What the sim target runs on this machine, and the Debian package of each.
TOOLS = {
    "ip": "iproute2",
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "sshd": "openssh-server",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "nft": "nftables",
}

console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def run(command: str, stack: Stack, purge: bool, backup: Callable[[Stack], None]) -> int:
    """The stack CLI's command for CLOUD=sim; `backup` makes the verified backup a purge
    takes first."""
    if command == "up":
        up(stack)
    elif command == "status":
        status(stack)
    elif command == "down":
        down(stack, purge=purge, backup=backup)
    else:
        raise UserError(f"`make {command}` is not available on CLOUD=sim yet")
    return 0


def up(stack: Stack) -> Cluster:
    """Make (or repair) the hosts; returns the running cluster."""
    _preflight()
    workers = _workers_wanted()
    old = sim_cluster.load(stack)
    if old is None:
        tear_down_unrecorded(stack)  # one whose state folder was deleted while it ran
    if old is not None and _running(old) and len(old.workers) == workers:
        cluster = old
        _start_sshds(stack, cluster, only_silent=True)
        action = "is up"
    else:
        if old is not None:
            tear_down(stack, old)  # a stale or resized cluster: cleaned, not tripped over
            sim_cluster.save(stack, old)
        cluster = _build(stack, workers, preferred_subnet=old.subnet if old else None)
        action = "is up (hosts made)"
    inventory.write(stack, cluster)
    hosts_only = flag("SIM_HOSTS_ONLY")
    stack.save_record(state="hosts" if hosts_only else "starting", updated=_now())
    console.print(
        f"sim stack [bold]{stack.name}[/] {action}: {len(cluster.hosts)} hosts on "
        f"{cluster.subnet}; inventory {stack.display(stack.inventory)}"
    )
    _table(stack, cluster)
    if not hosts_only:
        _configure(stack)
    return cluster


def _configure(stack: Stack) -> None:
    """The stack on the hosts, and its services checked the way this machine reaches them."""
    started = time.monotonic()
    playbook.run(
        "shared_software.yml",
        stack.inventory,
        stack.log_file("software"),
        what=f"make up ({stack.name}): the hosts' software, on this machine",
    )
    outcome = playbook.run(
        "site.yml", stack.inventory, stack.log_file("up"), what=f"make up ({stack.name})"
    )
    # This machine is no stack host: its firewall admits it to SSH only, as on Chameleon.
    access.point_clients_at_tunnels(stack.services_endpoints_file, stack.endpoints_file)
    way_in, services_address = access.from_inventory(stack.folder, stack.inventory)
    checks = probe.check(stack.endpoints(), way_in, services_address)
    probe.require_healthy(checks, console, "make up CLOUD=sim")
    stack.save_record(state="up", updated=_now())
    changes = f"{outcome.changed} change(s)" if outcome.changed else "no changes"
    console.print(
        f"sim stack [bold]{stack.name}[/] is configured ({changes}, "
        f"{time.monotonic() - started:.0f} s); Ansible log: {stack.display(outcome.log)}\n"
        "`make tunnel` opens MLflow, Ray's dashboard and the object store on this machine; "
        "with it open, `make train` runs as a job on the stack"
    )


def status(stack: Stack) -> None:
    cluster = sim_cluster.load(stack)
    if cluster is None:
        console.print(f"no sim stack {stack.name!r}: start one with `make up CLOUD=sim`")
        return
    running = _running(cluster)
    state = stack.record().get("state", "unknown") if running else "down"
    console.print(
        f"sim stack [bold]{stack.name}[/]: {state}, {len(cluster.hosts)} hosts on "
        f"{cluster.subnet} (the controller is {cluster.controller_address})"
    )
    endpoints = stack.endpoints()
    if not running or endpoints is None or state == "hosts":
        _table(stack, cluster)
        return
    way_in, services_address = access.from_inventory(stack.folder, stack.inventory)
    try:
        checks, nodes = _services(endpoints, way_in, services_address)
    except UserError as exc:
        checks, nodes = [], []
        console.print(f"[red]no tunnel to the services[/]: {exc}")
    _table(stack, cluster, nodes)
    for c in checks:
        mark = "[green]ok[/]" if c.healthy else "[red]failing[/]"
        console.print(f"  {c.service:14} {mark} {c.url:24} {c.detail}")


def down(stack: Stack, purge: bool = False, backup: Callable[[Stack], None] | None = None) -> None:
    cluster = sim_cluster.load(stack)
    if cluster is None:
        if os.geteuid() == 0 and tear_down_unrecorded(stack):
            console.print(f"sim stack [bold]{stack.name}[/] had lost its state folder; removed")
        else:
            console.print(f"no sim stack {stack.name!r} here; nothing to take down")
        return
    _need_root()
    if purge and backup is not None and stack.is_up and _running(cluster):
        backup(stack)  # the tracking data, before the hosts' folders go
    tear_down(stack, cluster, purge=purge)
    if purge:
        stack.remove_folder()
        console.print(f"sim stack [bold]{stack.name}[/] is down and its hosts' data deleted")
        return
    sim_cluster.save(stack, cluster)
    stack.save_record(state="down", updated=_now())
    console.print(
        f"sim stack [bold]{stack.name}[/] is down: no namespace, link, route or process of it "
        "is left; its hosts' data is kept (`make down CLOUD=sim PURGE=1` deletes it)"
    )


def _build(stack: Stack, workers: int, preferred_subnet: str | None) -> Cluster:
    subnet = network.choose_subnet(preferred_subnet)
    cluster = sim_cluster.plan(stack, subnet, workers)
    cluster.created_netns_dir = not network.NETNS_DIR.exists()
    # Recorded before anything exists: `make down` after a crash knows every name.
    sim_cluster.save(stack, cluster)
    try:
        network.create(cluster)
        sshd.ensure_key(stack)
        for host in cluster.hosts:
            host.init = hosts.start(stack, cluster, host)
            sim_cluster.save(stack, cluster)
        _start_sshds(stack, cluster)
    finally:
        sim_cluster.save(stack, cluster)
    return cluster


def _start_sshds(stack: Stack, cluster: Cluster, only_silent: bool = False) -> None:
    sshd.ensure_key(stack)
    for host in cluster.hosts:
        sshd.configure(stack, host)
    sshd.pin_host_keys(stack, cluster)
    for host in cluster.hosts:
        if not (only_silent and sshd.answers(stack, cluster, host)):
            sshd.start(stack, host)
    sshd.wait_answering(stack, cluster)


def _running(cluster: Cluster) -> bool:
    namespaces = set(network.netns_list())
    return cluster.bridge_netns in namespaces and all(
        h.netns in namespaces and h.init is not None and h.init.alive() for h in cluster.hosts
    )


def _services(endpoints, way_in, services_address) -> tuple[list[health.Check], list[dict]]:
    """The services' checks and Ray's nodes, through a tunnel of the status's own."""
    with probe.tunnel(way_in, services_address) as local:
        through = dataclasses.replace(
            endpoints, ray_address=f"http://127.0.0.1:{local['ray_address']}"
        )
        nodes = health.ray_nodes(through)
    checks = probe.check(endpoints, way_in, services_address, timeout=0)
    return checks, nodes


def _table(stack: Stack, cluster: Cluster, nodes: list[dict] | None = None) -> None:
    running = _running(cluster)
    by_address = {n.get("node_ip"): n for n in nodes or [] if n.get("state") == "ALIVE"}
    table = Table(show_header=True, header_style="bold")
    columns = ("host", "groups", "address", "ssh") + (("Ray node", "resources") if nodes else ())
    for column in columns:
        table.add_column(column)
    for host in cluster.hosts:
        groups = "services, ray_head" if host.is_gateway else "ray_workers"
        if not running:
            answer = "[red]down[/]"
        elif sshd.answers(stack, cluster, host):
            answer = "[green]answers[/]" + ("" if host.is_gateway else " (via head)")
        else:
            answer = "[red]no answer[/]"
        row = [host.name, groups, host.address, answer]
        if nodes:
            node = by_address.get(host.address)
            total = (node or {}).get("resources_total", {})
            resources = f"CPU {total.get('CPU', 0):g}"  # Ray leaves out what is 0
            resources += f", GPU {total['GPU']:g}" if total.get("GPU") else ""
            row += ["[green]ALIVE[/]" if node else "[red]not in the cluster[/]", resources]
        table.add_row(*row)
    console.print(table)
    if running:
        console.print(
            f"ssh: ssh -i {stack.display(sshd.key_file(stack))} -o "
            f"UserKnownHostsFile={stack.display(sshd.known_hosts_file(stack))} "
            f"root@{cluster.head.address}"
        )


def _workers_wanted() -> int:
    raw = os.environ.get("SIM_WORKERS") or str(DEFAULT_WORKERS)
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_WORKERS:
        raise UserError(f"SIM_WORKERS={raw} is not usable; give a number from 1 to {MAX_WORKERS}")
    return int(raw)


def _preflight() -> None:
    _need_root()
    missing = sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})
    if missing or not os.path.exists(hosts.SYSTEM_PYTHON):
        raise UserError(
            f"CLOUD=sim needs {', '.join(missing) or 'python3'} on this machine: "
            f"apt-get install {' '.join(missing or ['python3'])}"
        )


def _need_root() -> None:
    if os.geteuid() != 0:
        raise UserError(
            "CLOUD=sim makes network namespaces, links and mounts on this machine: run it as root"
        )


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
