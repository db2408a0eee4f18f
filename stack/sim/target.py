"""`CLOUD=sim`'s own work: the hosts (namespaces, network, sshd) before the shared sequence
configures them, the software they share installed on this machine first (they cannot reach a
registry), their table in `make status`, and their teardown."""

from __future__ import annotations

import ipaddress
import os
import shutil

from rich.table import Table

from core.errors import UserError
from core.state import DamagedState
from stack.inventory import Host, Hosts
from stack.playbook import run as run_playbook
from stack.sim import cluster as sim_cluster
from stack.sim import hosts, network, sshd
from stack.sim.cluster import MAX_WORKERS, Cluster, hosts_folder
from stack.sim.teardown import tear_down, tear_down_unrecorded
from stack.targets import Target

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


class SimTarget(Target):
    cloud = "sim"
    remote = True
    purge_deletes = (
        "every sim host's data (MLflow's databases, buckets, checkpoints, run records)",
        "the stack's secrets (SSH key, passwords, tokens)",
    )

    @property
    def cluster(self) -> Cluster | None:
        return sim_cluster.load(self.stack)

    def _readable_cluster(self) -> Cluster | None:
        """The sim record, or None when it is missing or damaged (said once)."""
        try:
            return self.cluster
        except DamagedState as exc:
            self.console.print(str(exc))
            return None

    # --- up ------------------------------------------------------------------------------
    def preflight(self, command: str) -> None:
        if command == "up":
            _workers_wanted()
            _need_root()
            missing = sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})
            if missing or not os.path.exists(hosts.SYSTEM_PYTHON):
                raise UserError(
                    f"CLOUD=sim needs {', '.join(missing) or 'python3'} on this machine: "
                    f"apt-get install {' '.join(missing or ['python3'])}"
                )
        elif command in ("down", "restore"):
            _need_root()

    def plan(self) -> list[str]:
        cluster = self._planned()
        return [
            f"sim hosts on {cluster.subnet}: {', '.join(h.name for h in cluster.hosts)}, each "
            "its own network, PID and mount namespace with an sshd; this machine reaches the "
            f"head at {cluster.head.address} only",
            "then: ansible/shared_software.yml installs the hosts' software on this machine",
        ]

    def planned_hosts(self) -> Hosts:
        return self._hosts(self._planned())

    def _planned(self) -> Cluster:
        old = self.cluster
        subnet = network.choose_subnet(old.subnet if old else None)
        return sim_cluster.plan(self.stack, subnet, _workers_wanted())

    def make_hosts(self) -> Hosts:
        """Make (or repair) the hosts; a stale or resized cluster is cleaned, not tripped
        over."""
        workers = _workers_wanted()
        old = self.cluster
        if old is None:
            tear_down_unrecorded(self.stack)  # one whose state folder was deleted while it ran
        if old is not None and _running(old) and len(old.workers) == workers:
            cluster = old
            self._start_sshds(cluster, only_silent=True)
            action = "are up"
        else:
            if old is not None:
                tear_down(self.stack, old)
                sim_cluster.save(self.stack, old)
            cluster = self._build(workers, preferred_subnet=old.subnet if old else None)
            action = "are made"
        self.console.print(f"sim hosts of [bold]{self.stack.name}[/] {action}")
        self.status_section(None)
        return self._hosts(cluster)

    def _hosts(self, cluster: Cluster) -> Hosts:
        head = Host(
            cluster.head.name,
            cluster.head.address,
            ("services", "ray_head"),
            # The services host trains nothing: every host shares this machine's cores, and
            # Ray Train's workers go to the worker hosts, one per host.
            {"ray_num_cpus": 0},
        )
        workers = [Host(h.name, h.address, ("ray_workers",)) for h in cluster.workers]
        target_vars: dict = {
            # No route out: the hosts use this machine's packages (shared /usr), never apt's.
            "stack_apt_update_cache": False,
        }
        if not os.environ.get("SSH_ALLOWED_CIDR", "").strip():
            # This machine is the only outsider that may SSH in, as the user's address is on
            # Chameleon.
            target_vars["stack_ssh_allowed_cidrs"] = [f"{cluster.controller_address}/32"]
        else:
            _check_reaches_controller(cluster)
        return Hosts([head, *workers], sshd.access(self.stack, cluster), target_vars)

    def _build(self, workers: int, preferred_subnet: str | None) -> Cluster:
        subnet = network.choose_subnet(preferred_subnet)
        cluster = sim_cluster.plan(self.stack, subnet, workers)
        cluster.created_netns_dir = not network.NETNS_DIR.exists()
        # Recorded before anything exists: `make down` after a crash knows every name.
        sim_cluster.save(self.stack, cluster)
        try:
            network.create(cluster)
            for host in cluster.hosts:
                host.init = hosts.start(self.stack, cluster, host)
                sim_cluster.save(self.stack, cluster)
            self._start_sshds(cluster)
        finally:
            sim_cluster.save(self.stack, cluster)
        return cluster

    def _start_sshds(self, cluster: Cluster, only_silent: bool = False) -> None:
        from stack.access import ensure_key

        ensure_key(self.stack.folder)
        for host in cluster.hosts:
            sshd.configure(self.stack, host)
        sshd.pin_host_keys(self.stack, cluster)
        way_in = sshd.access(self.stack, cluster)
        for host in cluster.hosts:
            if not (only_silent and way_in.answers(host.address)):
                sshd.start(self.stack, host)
        sshd.wait_answering(self.stack, cluster)

    def before_configure(self) -> None:
        run_playbook(
            "shared_software.yml",
            self.stack.inventory,
            self.stack.log_file("software"),
            what=f"make up ({self.stack.name}): the hosts' software, on this machine",
        )

    # --- status --------------------------------------------------------------------------
    def running(self) -> bool:
        try:
            cluster = self.cluster
        except DamagedState:
            return False
        return cluster is not None and _running(cluster)

    def status_section(self, nodes: list[dict] | None) -> None:
        cluster = self._readable_cluster()
        if cluster is None:
            self.console.print("no sim hosts: `make up CLOUD=sim` makes them")
            return
        running = _running(cluster)
        self.console.print(
            f"{len(cluster.hosts)} sim hosts on {cluster.subnet} (this machine is "
            f"{cluster.controller_address})"
        )
        by_address = {n.get("node_ip"): n for n in nodes or [] if n.get("state") == "ALIVE"}
        way_in = sshd.access(self.stack, cluster)
        table = Table(show_header=True, header_style="bold")
        columns = ("host", "groups", "address", "ssh") + (
            ("Ray node", "resources") if nodes else ()
        )
        for column in columns:
            table.add_column(column)
        for host in cluster.hosts:
            groups = "services, ray_head" if host.is_gateway else "ray_workers"
            if not running:
                answer = "[red]down[/]"
            elif way_in.answers(host.address):
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
        self.console.print(table)
        if running:
            self.console.print(
                f"ssh: ssh -i {self.stack.display(way_in.key)} -o "
                f"UserKnownHostsFile={self.stack.display(way_in.known_hosts)} "
                f"{way_in.user}@{cluster.head.address}"
            )

    # --- down ----------------------------------------------------------------------------
    def clean_forgotten(self) -> bool:
        if os.geteuid() == 0 and tear_down_unrecorded(self.stack):
            self.console.print(
                f"sim stack [bold]{self.stack.name}[/] had lost its state folder; removed"
            )
            return True
        return False

    def down_plan(self, purge: bool) -> list[str]:
        what = "and delete their folders" if purge else "keeping their data"
        return [f"  stop every sim host by its recorded PID, remove the namespaces, links, "
                f"routes and mount points, {what}"]  # fmt: skip

    def tear_down(self, purge: bool) -> None:
        cluster = self._readable_cluster()
        if cluster is None:
            if os.geteuid() == 0 and tear_down_unrecorded(self.stack):
                self.console.print("removed the sim hosts found by their names")
            else:
                self.console.print(f"no sim hosts of {self.stack.name!r} here")
            if purge:
                shutil.rmtree(hosts_folder(self.stack), ignore_errors=True)
            return
        tear_down(self.stack, cluster, purge=purge)
        if not purge:
            sim_cluster.save(self.stack, cluster)
        self.console.print(
            f"sim hosts of [bold]{self.stack.name}[/] are gone: no namespace, link, route or "
            "process of them is left"
        )

    def after_up(self) -> list[str]:
        return [
            "`make tunnel` opens MLflow, Ray's dashboard and the object store on this machine "
            "(for the UIs); `make train` reaches them by itself"
        ]


def _check_reaches_controller(cluster: Cluster) -> None:
    given = os.environ["SSH_ALLOWED_CIDR"].strip()
    try:
        allowed = ipaddress.ip_network(given, strict=False)
    except ValueError:
        return  # stack/settings.py names the problem
    if ipaddress.ip_address(cluster.controller_address) not in allowed:
        raise UserError(
            f"SSH_ALLOWED_CIDR={given} leaves out this machine ({cluster.controller_address}), "
            "the sim hosts' only way in; include it or unset SSH_ALLOWED_CIDR"
        )


def _running(cluster: Cluster) -> bool:
    namespaces = set(network.netns_list())
    return cluster.bridge_netns in namespaces and all(
        h.netns in namespaces and h.init is not None and h.init.alive() for h in cluster.hosts
    )


def _workers_wanted() -> int:
    raw = os.environ.get("SIM_WORKERS") or str(DEFAULT_WORKERS)
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_WORKERS:
        raise UserError(f"SIM_WORKERS={raw} is not usable; give a number from 1 to {MAX_WORKERS}")
    return int(raw)


def _need_root() -> None:
    if os.geteuid() != 0:
        raise UserError(
            "CLOUD=sim makes network namespaces, links and mounts on this machine: run it as root"
        )


TARGET = SimTarget
