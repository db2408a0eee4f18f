"""`make down PURGE=1` deletes data for good: it says what, and the user types the stack's
name (or, without a terminal, sets CONFIRM=<stack name>). Anything else deletes nothing."""

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
    environ = os.environ if environ is None else environ
    stdin = sys.stdin if stdin is None else stdin
    items = list(deletes)
    if not keeps_folder:
        items.append(f"the state folder {stack.display(stack.folder)} (what the stack wrote)")
    print(
        f"make down PURGE=1 deletes, for good, of stack {stack.name!r}:\n"
        + "".join(f"  - {item}\n" for item in items)
        + f"  (a backup goes to {stack.display(stack.backups)} first, where there is one to take)",
        file=sys.stderr,
    )
    given = environ.get("CONFIRM", "").strip()
    if not given and stdin.isatty():
        print(f"type the stack's name ({stack.name}) to delete it: ", end="", file=sys.stderr)
        sys.stderr.flush()
        given = stdin.readline().strip()
    if given != stack.name:
        how = f"CONFIRM={given!r} is not the stack's name" if given else "no terminal to ask on"
        raise UserError(
            f"{how}: nothing was deleted; confirm with CONFIRM={stack.name} "
            f"(`make down PURGE=1 CONFIRM={stack.name}`)"
        )
