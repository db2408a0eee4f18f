"""`make down CLOUD=sim`: close connections, stop every host by its recorded PID, then remove
the namespaces, links, routes and mount points, in that order. Works on whatever part of a
cluster exists (a `make up` killed half-way) and does nothing the second time."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess

from stack.sim import hosts, network, sshd
from stack.sim.cluster import Cluster, hosts_folder
from stack.state import Stack


def tear_down(stack: Stack, cluster: Cluster, purge: bool = False) -> None:
    # Connections first, while the network still carries their FIN: a socket left open when
    # its link goes would retransmit into whatever route is left.
    sshd.close_connections(stack)
    for host in cluster.hosts:
        hosts.stop(host)
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


def _kill_processes_in(netns: str) -> None:
    """Processes left in a namespace outside its host's PID namespace (a command a test ran
    with `ip netns exec`): killed by PID, before their namespace goes."""
    out = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True).stdout
    for pid in map(int, out.split()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
