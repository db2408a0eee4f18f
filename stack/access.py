"""SSH into a stack of several hosts (Chameleon's, sim's): the key pair the stack generates,
host keys pinned (at first contact on Chameleon, whose floating IPs are recycled; by `make up`
on sim), the jump through the gateway (Chameleon's floating IP, sim's head), and the tunnels to
the services, which answer only the stack's own hosts."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from core.errors import UserError
from core.services import role_defaults

# Reached only through SSH tunnels (ARCHITECTURE.md "Services and ports"), each on its own port
# number on this machine: (what it is, the role and defaults key of its port, the endpoints.json
# field that gives its URL to clients).
TUNNELLED = (
    ("MLflow", "mlflow", "mlflow_port", "mlflow_tracking_uri"),
    ("Ray dashboard", "ray", "ray_dashboard_port", "ray_address"),
    ("object store (S3 API)", "seaweedfs", "seaweedfs_s3_port", "s3_endpoint"),
)
TUNNEL_COMMAND = "make tunnel"


def tunnelled_ports() -> dict[str, int]:
    return {name: int(role_defaults(role)[key]) for name, role, key, _ in TUNNELLED}


@dataclass(frozen=True)
class Access:
    """How this machine logs in to a stack's hosts."""

    folder: Path  # the stack's state folder
    user: str
    gateway: str  # where SSH comes in: Chameleon's floating IP, sim's head

    @property
    def key(self) -> Path:
        return self.folder / "secrets" / "ssh_key"

    @property
    def known_hosts(self) -> Path:
        return self.folder / "known_hosts"

    def strict(self) -> list[str]:
        return [
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "StrictHostKeyChecking=yes",
        ]  # fmt: skip

    def proxy_command(self) -> str:
        """The jump hop with the same key and pins (ProxyJump would drop both)."""
        hop = [
            "ssh", "-W", "%h:%p", "-q", "-i", str(self.key), *self.strict(),
            f"{self.user}@{self.gateway}",
        ]  # fmt: skip
        return " ".join(shlex.quote(part) if part != "%h:%p" else part for part in hop)

    def ssh_args(self, host: str, first_contact: bool = False) -> list[str]:
        pin = "accept-new" if first_contact else "yes"
        args = ["-i", str(self.key), "-o", f"UserKnownHostsFile={self.known_hosts}"]
        args += ["-o", f"StrictHostKeyChecking={pin}", "-o", "BatchMode=yes"]
        if host != self.gateway:
            args += ["-o", f"ProxyCommand={self.proxy_command()}"]
        return [*args, f"{self.user}@{host}"]


def from_inventory(folder: Path, inventory_file: Path) -> tuple[Access, str]:
    """The way in that a stack's inventory describes (its services host is the gateway, on
    Chameleon and sim alike) and the services' private address."""
    import yaml

    inventory = yaml.safe_load(inventory_file.read_text())
    (services,) = inventory["all"]["children"]["services"]["hosts"].values()
    user = inventory["all"]["vars"]["ansible_user"]
    return Access(folder, user, services["ansible_host"]), services["stack_private_address"]


def ensure_key(folder: Path) -> str:
    """The stack's SSH key (ed25519, 0600, made once); returns the public half."""
    key = folder / "secrets" / "ssh_key"
    if not key.is_file():
        key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"stack-{folder.name}",
             "-f", str(key)],
            check=True,
        )  # fmt: skip
        os.chmod(key, 0o600)
    return (key.parent / "ssh_key.pub").read_text().strip()


def wait_for_ssh(access: Access, hosts: list[str], timeout: float, interval: float = 10) -> None:
    """Log in to each host once (the gateway first, the others through it), pinning each host
    key at that first contact; afterwards every connection is strict."""
    deadline = time.monotonic() + timeout
    for host in [access.gateway, *[h for h in hosts if h != access.gateway]]:
        while True:
            proc = subprocess.run(
                ["ssh", "-o", "ConnectTimeout=10", *access.ssh_args(host, first_contact=True),
                 "true"],
                capture_output=True,
                text=True,
                check=False,
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


def point_clients_at_tunnels(services_file: Path, endpoints_file: Path) -> None:
    """The endpoints file of this machine's clients (`make train`, reports), who reach the
    services through `make tunnel`, from the services' own that site.yml wrote; the private
    URLs stay under `private`. An external S3 endpoint (S3_ENDPOINT=) is reached directly and
    left as it is."""
    endpoints = json.loads(services_file.read_text())
    private = {}
    local = local_urls()
    for name, _, _, field in TUNNELLED:
        url = endpoints.get(field)
        if not url or (field == "s3_endpoint" and endpoints.get("object_store") != "seaweedfs"):
            continue
        private[field] = url
        endpoints[field] = local[name]
    endpoints.update(private=private, reached_through=TUNNEL_COMMAND)
    partial = endpoints_file.with_suffix(".partial")
    partial.write_text(json.dumps(endpoints, indent=2) + "\n")
    partial.chmod(0o600)
    partial.replace(endpoints_file)
