"""What replaces or deletes data for good asks first: `make down PURGE=1` and `make restore` say
what they change, and the user types the stack's name (or, without a terminal, sets
CONFIRM=<stack name>). Anything else changes nothing."""

from __future__ import annotations

import os
import sys

from core.errors import UserError
from stack.state import Stack


def confirm_purge(
    stack: Stack, deletes: tuple[str, ...], keeps_folder: bool, environ=None, stdin=None
) -> None:
    """Return only when the user confirmed deleting `stack`'s data (`deletes` says what, the
    target's own list); else a UserError."""
    items = list(deletes)
    if not keeps_folder:
        items.append(f"the state folder {stack.display(stack.folder)} (what the stack wrote)")
    items.append(
        f"(a backup goes to {stack.display(stack.backups)} first, where there is one to take)"
    )
    _confirm(stack, "make down PURGE=1", "deletes, for good", items, "deleted", environ, stdin)


def confirm_restore(stack: Stack, backup: str, environ=None, stdin=None) -> None:
    """Return only when the user confirmed replacing `stack`'s data with the backup."""
    items = [
        "MLflow's databases (runs, metrics, users): they become the backup's, and runs made "
        "since it are gone from MLflow",
        "objects of the same name in the checkpoints and datasets buckets, and the run records",
        f"(the current data is backed up to {stack.display(stack.backups)} first)",
    ]
    _confirm(stack, f"make restore BACKUP={backup}", "replaces", items, "changed", environ, stdin)


def _confirm(stack, command, verb, items, outcome, environ, stdin) -> None:
    environ = os.environ if environ is None else environ
    stdin = sys.stdin if stdin is None else stdin
    print(
        f"{command} {verb}, of stack {stack.name!r}:\n" + "".join(f"  - {i}\n" for i in items),
        end="",
        file=sys.stderr,
    )
    given = environ.get("CONFIRM", "").strip()
    if not given and stdin.isatty():
        print(f"type the stack's name ({stack.name}) to go on: ", end="", file=sys.stderr)
        sys.stderr.flush()
        given = stdin.readline().strip()
    if given != stack.name:
        how = f"CONFIRM={given!r} is not the stack's name" if given else "no terminal to ask on"
        raise UserError(
            f"{how}: nothing was {outcome}; confirm with CONFIRM={stack.name} "
            f"(`{command} CONFIRM={stack.name}`)"
        )
