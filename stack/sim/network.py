"""The test network: a bridge in a network namespace of its own, one veth per host into it, and
one veth from the root namespace (the controller) that routes to the head's address only.

No route to the outside exists by construction: the bridge namespace has no other interface and
no address, the hosts' only route is their own subnet, and the controller's link carries a /32
route to the head. In the root namespace an `unreachable` route holds the whole subnet from
before the first link is made until after the last one is gone, so a packet for a test address
(a worker, a retransmit after teardown) is refused on this machine instead of leaving through
its real interface (a deleted bridge with sockets still open would send their retransmits
there)."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from pathlib import Path

from core.errors import UserError
from stack.sim.cluster import Cluster

# Candidate test subnets: 10.99.N.0/24. The first one that overlaps none of this machine's
# routes (nor another sim stack's, whose unreachable route is one of them) is taken.
SUBNET_POOL = ipaddress.ip_network("10.99.0.0/16")
SUBNET_PREFIX = 24
BRIDGE = "br0"
NETNS_DIR = Path("/run/netns")
# The interface name of every host's end of its veth, inside the host's own namespace.
HOST_LINK = "eth0"


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def root_routes() -> list[dict]:
    """Every IPv4 route of the root namespace, all tables (JSON from `ip -j route`)."""
    return json.loads(ip("-4", "-j", "route", "show", "table", "all").stdout or "[]")


def routes_into(subnet: str) -> list[dict]:
    """Root-namespace routes whose destination overlaps `subnet` (the default route aside)."""
    net = ipaddress.ip_network(subnet)
    found = []
    for route in root_routes():
        dst = route.get("dst", "")
        if dst in ("default", "") or route.get("type") in ("broadcast",):
            continue
        if ipaddress.ip_network(dst, strict=False).overlaps(net):
            found.append(route)
    return found


def choose_subnet(preferred: str | None = None) -> ipaddress.IPv4Network:
    if preferred and not routes_into(preferred):
        return ipaddress.ip_network(preferred)
    for candidate in SUBNET_POOL.subnets(new_prefix=SUBNET_PREFIX):
        if not routes_into(str(candidate)):
            return candidate
    raise UserError(
        f"every test subnet in {SUBNET_POOL} overlaps a route of this machine; "
        "take a sim stack down (`make down CLOUD=sim STACK_NAME=...`) or free one"
    )


def netns_list() -> list[str]:
    return [e["name"] for e in json.loads(ip("-j", "netns", "list").stdout or "[]")]


def create(cluster: Cluster) -> None:
    """Build the network of `cluster` (hosts' namespaces included); the record already names
    everything, so a crash half-way is cleaned by `destroy`."""
    ip("route", "add", "unreachable", cluster.subnet)
    _add_netns(cluster, cluster.bridge_netns)
    ip("-n", cluster.bridge_netns, "link", "add", BRIDGE, "type", "bridge")
    ip("-n", cluster.bridge_netns, "link", "set", BRIDGE, "up")
    for host in cluster.hosts:
        attach(cluster, host.netns, host.address, link=host.name)
    # The controller's link: a /32 of its own and a route to the head's address only.
    ctl = cluster.controller_link
    ip(
        "link",
        "add",
        ctl,
        "type",
        "veth",
        "peer",
        "name",
        "controller",
        "netns",
        cluster.bridge_netns,
    )
    _sysctl(None, f"net/ipv6/conf/{ctl}/disable_ipv6", "1")
    _sysctl(None, f"net/ipv4/conf/{ctl}/forwarding", "0")
    ip("-n", cluster.bridge_netns, "link", "set", "controller", "master", BRIDGE, "up")
    ip("addr", "add", f"{cluster.controller_address}/32", "dev", ctl)
    ip("link", "set", ctl, "up")
    ip("route", "add", f"{cluster.head.address}/32", "dev", ctl, "src", cluster.controller_address)


def attach(cluster: Cluster, netns: str, address: str, link: str) -> None:
    """A new network namespace `netns` on the test network at `address`; `link` names its
    port on the bridge."""
    _add_netns(cluster, netns)
    ip(
        "-n",
        cluster.bridge_netns,
        "link",
        "add",
        link,
        "type",
        "veth",
        "peer",
        "name",
        HOST_LINK,
        "netns",
        netns,
    )
    ip("-n", cluster.bridge_netns, "link", "set", link, "master", BRIDGE, "up")
    ip("-n", netns, "addr", "add", f"{address}/{cluster.prefix_length}", "dev", HOST_LINK)
    ip("-n", netns, "link", "set", HOST_LINK, "up")
    ip("-n", netns, "link", "set", "lo", "up")


def destroy(cluster: Cluster) -> None:
    """Remove what `create` made, whatever part of it exists; the unreachable route goes last.
    The processes in the namespaces must be gone already (see teardown)."""
    existing = set(netns_list())
    for netns in [h.netns for h in cluster.hosts] + list(cluster.attached):
        if netns in existing:
            ip("netns", "delete", netns)
    if ip("link", "show", cluster.controller_link, check=False).returncode == 0:
        ip("link", "delete", cluster.controller_link)
    if cluster.bridge_netns in existing:
        ip("netns", "delete", cluster.bridge_netns)
    for route in routes_into(cluster.subnet):
        if route.get("type") == "unreachable" and route.get("dst") == cluster.subnet:
            ip("route", "delete", "unreachable", cluster.subnet)
    if cluster.created_netns_dir:
        release_netns_dir()


def release_netns_dir() -> None:
    """`ip netns add` made /run/netns a mount point of its own: once no namespace is left in
    it, unmount and remove it, so no mount is left behind (`ip` makes it again when needed)."""
    if NETNS_DIR.is_dir() and not any(NETNS_DIR.iterdir()):
        subprocess.run(["umount", str(NETNS_DIR)], capture_output=True)
        NETNS_DIR.rmdir()


def _add_netns(cluster: Cluster, netns: str) -> None:
    ip("netns", "add", netns)
    # IPv4 only on the test network: nothing of the stack uses IPv6, and no link-local path
    # then exists beside the one the firewall is tested on.
    _sysctl(netns, "net/ipv6/conf/all/disable_ipv6", "1")
    _sysctl(netns, "net/ipv6/conf/default/disable_ipv6", "1")


def _sysctl(netns: str | None, key: str, value: str) -> None:
    path = f"/proc/sys/{key}"
    if netns is None:
        if os.path.exists(path):
            Path(path).write_text(value)
        return
    subprocess.run(
        ["ip", "netns", "exec", netns, "sh", "-c", f"test -e {path} && echo {value} > {path}"],
        capture_output=True,
        check=False,
    )
