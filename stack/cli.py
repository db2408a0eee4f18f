"""Command line: `python -m stack up|status|down|backup|restore|extend|tunnel` (what `make up`
etc. run). It parses and dispatches; the shared sequence is stack/flow.py, each target's own
work its package (stack/local, stack/sim, stack/chameleon).

CLOUD=local (the default) puts every service on this machine; STACK_NAME names the stack
(default: the cloud's name, else the stack the last `make up` was for), whose state lives in
.stack/<name>/. `down` keeps the data unless PURGE=1, which first backs it up (verified) into
.stack/backups/<name>/; `restore` puts such a backup back. A user error prints one line and
exits 2."""

from __future__ import annotations

import os

from core import cli
from core import state as core_state
from core.errors import UserError
from core.flags import flag
from stack import flow
from stack.state import CLOUDS, ROOT_ENTRIES, Stack

INTERRUPTED = (
    "interrupted; the stack may be half-configured: `make status` shows it, `make up` "
    "completes it, `make down` stops it"
)


def current_stack() -> Stack:
    """The stack a command is about (core.state.stack_name) and its cloud: CLOUD=, else the
    one the stack was made for, else local. Everything that can refuse does so here, before
    anything runs."""
    given = os.environ.get("CLOUD") or ""
    if given and given not in CLOUDS:
        raise UserError(f"CLOUD={given} is not a target; use one of {', '.join(CLOUDS)}")
    name = core_state.stack_name()
    if name in ROOT_ENTRIES or not name.replace("-", "").isalnum():
        raise UserError(f"STACK_NAME={name!r} is not usable; pick letters, digits and dashes")
    stack = Stack(name, given or "local")
    stack.check_folder()
    made_for = _made_for(stack)
    if given and made_for and given != made_for:
        raise UserError(
            f"stack {name!r} is a CLOUD={made_for} stack; drop CLOUD= to use it, or name "
            "another stack with STACK_NAME="
        )
    flag("DRY_RUN"), flag("PURGE")  # a typo in either is refused, whatever the command
    return Stack(name, given or made_for or "local")


def _made_for(stack: Stack) -> str:
    try:
        record = core_state.StackRecord.read(stack.folder)
    except core_state.DamagedState:
        return ""  # the command that reads it says so, and `down` works from the rest
    return record.cloud if record else ""


def _on_stack(action):
    return lambda args: action(current_stack())


COMMANDS = [
    cli.Command("up", "configure the stack (again); prints its URLs and logins",
                _on_stack(flow.up)),
    cli.Command("status", "what is up, the health of each service, URLs", _on_stack(flow.status)),
    cli.Command("down", "stop the services; PURGE=1 also deletes the data (backed up)",
                _on_stack(flow.down)),
    cli.Command("backup", "back the databases, artifacts, buckets, run records up",
                _on_stack(flow.backup)),
    cli.Command("restore", "put the backup BACKUP= names into the running stack",
                _on_stack(flow.restore)),
    cli.Command("extend", "CLOUD=chameleon: prolong the lease by HOURS=", _on_stack(flow.extend)),
    cli.Command("tunnel", "chameleon, sim: SSH tunnels to MLflow, Ray, the object store",
                _on_stack(flow.tunnel)),
]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    return cli.main("python -m stack", __doc__, COMMANDS, argv, interrupted=INTERRUPTED)
