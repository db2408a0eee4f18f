"""`make down CLOUD=sim`: close connections, stop every host by its recorded PID, then remove
the namespaces, links, routes and mount points, in that order. Works on whatever part of a
cluster exists (a `make up` killed half-way) and does nothing the second time."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import signal
import subprocess

from stack.sim import hosts, network, sshd
from stack.sim.cluster import Cluster, controller_link_name, hosts_folder
from stack.state import Stack


def tear_down(stack: Stack, cluster: Cluster, purge: bool = False) -> None:
    # Connections first, while the network still carries their FIN: a socket left open when
    # its link goes would retransmit into whatever route is left.
    sshd.close_connections(stack)
    hosts.stop(cluster.hosts)
    for host in cluster.hosts:
        host.init = None
    existing = set(network.netns_list())
    for netns in [h.netns for h in cluster.hosts] + list(cluster.attached):
        if netns in existing:
            _kill_processes_in(netns)
    network.destroy(cluster)
    hosts.remove_mount_points(cluster)
    for host in cluster.hosts:
        hosts.clear_volatile(stack, host)
    if purge:
        shutil.rmtree(hosts_folder(stack), ignore_errors=True)


def tear_down_unrecorded(stack: Stack) -> bool:
    """Remove the namespaces, link and routes of a sim stack whose record is gone (its state
    folder deleted while it ran), found by their names; True when there was something."""
    own = re.compile(rf"^stack-{re.escape(stack.name)}-(head|net|worker-\d+|outsider)$")
    namespaces = [ns for ns in network.netns_list() if own.match(ns)]
    link = controller_link_name(stack.name)
    subnets = [
        str(ipaddress.ip_network(f"{r['dst']}/{network.SUBNET_PREFIX}", strict=False))
        for r in network.root_routes()
        if r.get("dev") == link and r.get("table") != "local"
    ]
    if not namespaces and not subnets:
        return False
    for netns in namespaces:
        _kill_processes_in(netns)  # every process of a host lives in its network namespace
    for netns in namespaces:
        network.ip("netns", "delete", netns)
    if network.ip("link", "show", link, check=False).returncode == 0:
        network.ip("link", "delete", link)
    for subnet in subnets:
        network.ip("route", "delete", "unreachable", subnet, check=False)
    network.release_netns_dir()
    # Its mount points are not recorded either: the candidates that are empty and no package's.
    hosts.remove_if_unused(sorted([*hosts.private_dirs(), *hosts.PRIVATE_FILES], reverse=True))
    return True


def _kill_processes_in(netns: str) -> None:
    """Processes left in a namespace outside its host's PID namespace (a command a test ran
    with `ip netns exec`): killed by PID, before their namespace goes."""
    out = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True).stdout
    for pid in map(int, out.split()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
