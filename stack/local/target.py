"""`CLOUD=local`: this machine is the one host. `make up` needs root (it installs packages and
services) and the stack's ports free; `make down` runs `ansible/down.yml` and waits for the
ports to be let go."""

from __future__ import annotations

import os
import subprocess

from core.errors import UserError
from stack import inventory, playbook, ports
from stack.inventory import Hosts
from stack.targets import Target


class LocalTarget(Target):
    cloud = "local"
    purge_deletes = (
        "MLflow's databases (runs, metrics, users) in the stack's PostgreSQL",
        "the object store's buckets (artifacts, checkpoints, datasets)",
        "Ray's checkpoints and run records (what RESUME=1 continues from)",
        "the stack's secrets (passwords, tokens, keys)",
    )

    def preflight(self, command: str) -> None:
        if command in ("up", "down", "restore"):
            _need_root()
        if command != "up":
            return
        # Ports are ours after any earlier `up` of this stack (even a failed one) until `down`.
        if self.stack.record.state in ("up", "starting"):
            return
        if busy := ports.taken_ports():
            port, name = next(iter(busy.items()))
            raise UserError(
                f"port {port} ({name}) is already in use by another program; stop it "
                f"(`ss -ltnp 'sport = :{port}'` shows which) and run `make up` again"
            )

    def plan(self) -> list[str]:
        return [f"this machine is the stack's one host (services on loopback); ports "
                f"{', '.join(map(str, ports.local_ports()))} must be free"]  # fmt: skip

    def make_hosts(self) -> Hosts:
        return inventory.local_hosts()

    def tear_down(self, purge: bool) -> None:
        if not self.stack.inventory.is_file():
            inventory.write(self.stack, inventory.render(self.stack, self.make_hosts()))
        outcome = playbook.run(
            "down.yml",
            self.stack.inventory,
            self.stack.log_file("down"),
            {"stack_purge": purge},
            what=f"make down ({self.stack.name})",
        )
        if busy := ports.wait_free():
            held = ", ".join(f"{port} ({name})" for port, name in busy.items())
            raise UserError(
                f"services stopped, but ports are still held: {held}; see "
                f"{self.stack.display(outcome.log)}"
            )

    def down_plan(self, purge: bool) -> list[str]:
        what = "stop the services and delete their data" if purge else "stop the services"
        return [f"  ansible-playbook -i {self.stack.display(self.stack.inventory)} "
                f"ansible/down.yml ({what})"]  # fmt: skip


def _need_root() -> None:
    """The local stack installs packages and services on this machine."""
    if os.geteuid() == 0:
        return
    if subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode != 0:
        raise UserError(
            "CLOUD=local configures this machine (packages, services) and needs root or "
            "passwordless sudo; run it as root or with `sudo -v` first"
        )


TARGET = LocalTarget
