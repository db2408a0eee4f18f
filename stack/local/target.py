"""`CLOUD=local`: this machine is the one host. `make up` needs root (it installs packages and
services) and the stack's ports free; `make down` runs `ansible/down.yml` and waits for the
ports to be let go.

One machine has one set of local services (one PostgreSQL cluster, one SeaweedFS, fixed ports),
so it holds one local stack: the machine records which (`core.paths.machine_root()`), from its
first `make up` until `make down PURGE=1` deletes its data; a second local stack is refused."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from core.errors import UserError
from core.paths import machine_root
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
        self._one_stack_here()
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
        self._claim()
        return inventory.local_hosts()

    # --- one local stack per machine ------------------------------------------------------
    @property
    def _owner_file(self):
        return machine_root() / "local-stack.json"

    def _owner(self) -> dict:
        try:
            return json.loads(self._owner_file.read_text())
        except (OSError, ValueError):
            return {}

    def _one_stack_here(self) -> None:
        owner, me = self._owner(), str(self.stack.folder)
        if not owner or owner.get("folder") == me:
            return
        if not (Path(owner["folder"]) / "stack.json").is_file():
            self.console.print(
                f"this machine's local services belonged to stack {owner.get('name')!r}, whose "
                f"state folder {owner['folder']} is gone; stack {self.stack.name!r} takes them over"
            )
            return
        raise UserError(
            f"this machine's local services (PostgreSQL, SeaweedFS, MLflow, Ray on fixed ports) "
            f"belong to stack {owner.get('name')!r} (state folder {owner['folder']}): one machine "
            f"holds one local stack. Use that one (STACK_NAME={owner.get('name')}, "
            f"STACK_DIR={Path(owner['folder']).parent}), or delete it first with "
            f"`make down PURGE=1` there"
        )

    def _claim(self) -> None:
        folder = machine_root()
        folder.mkdir(mode=0o755, parents=True, exist_ok=True)
        tmp = self._owner_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"name": self.stack.name, "folder": str(self.stack.folder)}))
        tmp.replace(self._owner_file)

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
        if purge and self._owner().get("folder") == str(self.stack.folder):
            self._owner_file.unlink(missing_ok=True)  # its data is gone: the machine is free
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
