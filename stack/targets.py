"""What a target is (`local`, `sim`, `chameleon`): one small protocol that the shared sequence
(stack/flow.py) drives, and the one lookup that picks a target by its name. Each target is a
package under `stack/` that does its own work here and nothing of the shared sequence."""

from __future__ import annotations

import importlib

from rich.console import Console

from core.errors import UserError
from stack.inventory import Hosts
from stack.state import Stack

# The package of each target and the class in its `target` module.
TARGETS = {
    "local": "stack.local.target",
    "sim": "stack.sim.target",
    "chameleon": "stack.chameleon.target",
}


class NotReady(Exception):  # noqa: N818 - a state, not a failure
    """The hosts cannot be made yet (an advance reservation): `make up` stops there, saying
    when to run it again, with exit status 0."""


class Target:
    """The defaults are `local`'s: one host, this machine, nothing to make or tear down."""

    cloud = ""
    # The services answer the stack's own hosts only: this machine reaches them through SSH
    # tunnels via the gateway (sim, Chameleon).
    remote = False
    # `make down` backs the data up even without PURGE (the hosts' disks go with them).
    backs_up_on_down = False
    # What a purge deletes (the state folder is added by the shared sequence where it goes).
    purge_deletes: tuple[str, ...] = ()

    def __init__(self, stack: Stack, console: Console) -> None:
        self.stack, self.console = stack, console

    # --- up ------------------------------------------------------------------------------
    def preflight(self, command: str) -> None:
        """What this machine needs for `command`, checked before anything runs."""

    def plan(self) -> list[str]:
        """DRY_RUN=1 of `make up`: what would be made besides the configuration."""
        return []

    def planned_hosts(self) -> Hosts:
        """The hosts as DRY_RUN=1 shows them in the inventory (placeholders where only
        making them tells)."""
        return self.make_hosts()

    def make_hosts(self) -> Hosts:
        raise NotImplementedError

    def before_configure(self) -> None:
        """Anything the hosts need before site.yml runs on them."""

    def health_timeout(self) -> float:
        from stack import settings

        return settings.health_timeout()

    def after_up(self) -> list[str]:
        """What `make up` adds to its report."""
        return []

    # --- status --------------------------------------------------------------------------
    def running(self) -> bool:
        """Whether the hosts exist (their services may still be stopped)."""
        return True

    def status_section(self, nodes: list[dict] | None) -> None:
        """The target's own part of `make status` (Ray's nodes when the services answered)."""

    # --- down ----------------------------------------------------------------------------
    def clean_forgotten(self) -> bool:
        """What is left of a stack whose state folder is gone; True when something was."""
        return False

    def down_plan(self, purge: bool) -> list[str]:
        return []

    def tear_down(self, purge: bool) -> None:
        """Stop the services and remove what `make up` made (keeping the data unless purge)."""
        raise NotImplementedError

    def keeps_folder_on_purge(self) -> bool:
        return False

    def kept_after_down(self) -> str:
        return "its data is kept (`make up` brings it back, `make down PURGE=1` deletes it)"

    def lost_without_backup(self) -> str:
        """What `make down` loses when its backup is skipped."""
        return "nothing: the data stays where it is"

    # --- the rest --------------------------------------------------------------------------
    def extend(self) -> None:
        raise UserError("make extend is for CLOUD=chameleon stacks")


def target_for(stack: Stack, console: Console) -> Target:
    """The one lookup: the target package named by the stack's cloud."""
    module = importlib.import_module(TARGETS[stack.cloud])
    return module.TARGET(stack, console)
