"""SSH into a stack of several hosts (Chameleon's, sim's), in one place for the CLI, the sim's
sshd set-up, the health probes and Ansible's inventory: the key pair the stack generates, host
keys pinned (at first contact on Chameleon, whose floating IPs are recycled; by `make up` on
sim), the jump through the gateway (Chameleon's floating IP, sim's head), and the tunnels to
the services, which answer only the stack's own hosts."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from core import tunnel as core_tunnel
from core.errors import UserError
from core.services import role_defaults

# Reached only through SSH tunnels (the services answer the stack's own hosts only), each on
# its own port number on this machine: (what it is, the role and defaults key of its port, the
# endpoints.json field that gives its URL to clients).
TUNNELLED = (
    ("MLflow", "mlflow", "mlflow_port", "mlflow_tracking_uri"),
    ("Ray dashboard", "ray", "ray_dashboard_port", "ray_address"),
    ("object store (S3 API)", "seaweedfs", "seaweedfs_s3_port", "s3_endpoint"),
)
TUNNEL_COMMAND = "make tunnel"
CONNECT_TIMEOUT_S = 10


def tunnelled_ports() -> dict[str, int]:
    return {name: int(role_defaults(role)[key]) for name, role, key, _ in TUNNELLED}


def key_file(folder: Path) -> Path:
    """The stack's SSH key (its public half beside it as ssh_key.pub)."""
    return folder / "secrets" / "ssh_key"


def ensure_key(folder: Path) -> str:
    """The stack's SSH key (ed25519, 0600, made once); returns the public half."""
    key = key_file(folder)
    if not key.is_file():
        keygen(key, f"stack-{folder.name}")
    key.chmod(0o600)
    return Path(f"{key}.pub").read_text().strip()


def keygen(path: Path, comment: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )
    path.chmod(0o600)


@dataclass(frozen=True)
class Access:
    """How this machine logs in to a stack's hosts."""

    folder: Path  # the stack's state folder
    user: str
    gateway: str  # where SSH comes in: Chameleon's floating IP, sim's head

    @property
    def key(self) -> Path:
        return key_file(self.folder)

    @property
    def known_hosts(self) -> Path:
        return self.folder / "known_hosts"

    @property
    def control_dir(self) -> Path:
        """Where Ansible's SSH connection masters keep their sockets (closed before a sim's
        network goes)."""
        return self.folder / "ssh-control"

    def pinned(self, first_contact: bool = False) -> list[str]:
        """Host keys from the stack's known_hosts only: strict, but at first contact (a new
        Chameleon instance), when the key seen is pinned."""
        pin = "accept-new" if first_contact else "yes"
        return [
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", f"StrictHostKeyChecking={pin}",
        ]  # fmt: skip

    def proxy_command(self) -> str:
        """The jump hop through the gateway with the same key and pins (ProxyJump would drop
        both)."""
        hop = [
            "ssh", "-W", "%h:%p", "-q", "-i", str(self.key), "-o", "IdentitiesOnly=yes",
            *self.pinned(), "-o", "BatchMode=yes", f"{self.user}@{self.gateway}",
        ]  # fmt: skip
        return " ".join(shlex.quote(part) if part != "%h:%p" else part for part in hop)

    def ssh_args(self, host: str, first_contact: bool = False) -> list[str]:
        args = ["-i", str(self.key), "-o", "IdentitiesOnly=yes", *self.pinned(first_contact)]
        args += ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}"]
        if host != self.gateway:
            args += ["-o", f"ProxyCommand={self.proxy_command()}"]
        return [*args, f"{self.user}@{host}"]

    def ssh_command(self, host: str, *command: str) -> list[str]:
        return ["ssh", *self.ssh_args(host), *command]

    def ansible_args(self, host: str) -> str:
        """`ansible_ssh_common_args` for `host`: the pins, and the jump unless it is the
        gateway (the key and user are inventory variables of their own)."""
        args = " ".join(self.pinned())
        if host == self.gateway:
            return args
        return f"-o ProxyCommand={shlex.quote(self.proxy_command())} {args}"

    def answers(self, host: str) -> bool:
        proc = subprocess.run(
            self.ssh_command(host, "true"), capture_output=True, stdin=subprocess.DEVNULL,
            timeout=60, check=False,
        )  # fmt: skip
        return proc.returncode == 0


def from_inventory(folder: Path, inventory_file: Path) -> tuple[Access, str]:
    """The way in that a stack's inventory describes (its services host is the gateway, on
    Chameleon and sim alike) and the services' private address."""
    import yaml

    inventory = yaml.safe_load(inventory_file.read_text())
    (services,) = inventory["all"]["children"]["services"]["hosts"].values()
    user = inventory["all"]["vars"]["ansible_user"]
    return Access(folder, user, services["ansible_host"]), services["stack_private_address"]


def wait_for_ssh(access: Access, hosts: list[str], timeout: float, interval: float = 10) -> None:
    """Log in to each host once (the gateway first, the others through it), pinning each host
    key at that first contact; afterwards every connection is strict."""
    deadline = time.monotonic() + timeout
    for host in [access.gateway, *[h for h in hosts if h != access.gateway]]:
        while True:
            proc = subprocess.run(
                ["ssh", *access.ssh_args(host, first_contact=True), "true"],
                capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False,
            )  # fmt: skip
            if proc.returncode == 0:
                break
            if time.monotonic() > deadline:
                last = (proc.stderr.strip().splitlines() or ["no answer"])[-1]
                raise UserError(
                    f"no SSH login to {host} within {timeout:.0f} s ({last}); instances take "
                    "minutes to boot (bare metal 7 to 10): `make up` again continues"
                )
            time.sleep(interval)


# --- tunnels -----------------------------------------------------------------------------
def tunnel_command(
    access: Access, services_address: str, local_ports: list[int] | None = None
) -> list[str]:
    """ssh forwarding each tunnelled service; to the same port numbers here unless local_ports
    (in TUNNELLED's order) says otherwise."""
    remote = list(tunnelled_ports().values())
    forwards = []
    for port, here in zip(remote, local_ports or remote, strict=True):
        forwards += ["-L", f"127.0.0.1:{here}:{services_address}:{port}"]
    return ["ssh", "-N", "-o", "ExitOnForwardFailure=yes", *forwards,
            *access.ssh_args(access.gateway)]  # fmt: skip


def local_urls() -> dict[str, str]:
    return {name: f"http://127.0.0.1:{port}" for name, port in tunnelled_ports().items()}


@contextlib.contextmanager
def tunnel(access: Access, services_address: str, why: str) -> Iterator[dict[str, int]]:
    """Forwards from free local ports to the tunnelled services, for as long as the block
    runs; yields {endpoints field: local port}."""
    with core_tunnel.forwarding(
        access.ssh_args(access.gateway), forwards(services_address), why
    ) as local:
        yield local


def forwards(services_address: str) -> dict[str, str]:
    """{endpoints field: the service's private host:port}, for each tunnelled service."""
    ports = tunnelled_ports()
    return {field: f"{services_address}:{ports[name]}" for name, _, _, field in TUNNELLED}


def point_clients_at_tunnels(
    services_file: Path, endpoints_file: Path, way_in: Access, services_address: str
) -> None:
    """The endpoints file of this machine's clients (`make train`, reports), who reach the
    services through SSH tunnels (`make tunnel`'s ports, or forwards a command opens itself:
    `tunnel` says how), from the services' own that site.yml wrote; the private URLs stay
    under `private`. An external S3 endpoint (S3_ENDPOINT=) is reached directly and left as it
    is."""
    endpoints = json.loads(services_file.read_text())
    private = {}
    local = local_urls()
    for name, _, _, field in TUNNELLED:
        url = endpoints.get(field)
        if not url or (field == "s3_endpoint" and endpoints.get("object_store") != "seaweedfs"):
            continue
        private[field] = url
        endpoints[field] = local[name]
    tunnelled = {f: a for f, a in forwards(services_address).items() if f in private}
    endpoints.update(
        private=private,
        reached_through=TUNNEL_COMMAND,
        tunnel={"ssh": way_in.ssh_args(way_in.gateway), "forwards": tunnelled},
    )
    partial = endpoints_file.with_suffix(".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(endpoints, indent=2) + "\n")
    partial.replace(endpoints_file)
