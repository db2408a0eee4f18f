"""Make variables as the CLIs read them: yes/no knobs (PURGE, DRY_RUN, ...) with one parser, so
`PURGE=false` never means yes; and settings given in either case."""

from __future__ import annotations

import os
from collections.abc import Mapping

from core.errors import UserError

YES = ("1", "yes", "true")
NO = ("", "0", "no", "false")


def flag(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """The variable `name` as a yes/no: 1/yes/true or 0/no/false (or unset); anything else
    is a UserError, so a typo never deletes or starts anything."""
    raw = (os.environ if environ is None else environ).get(name, "").strip().lower()
    if raw in YES:
        return True
    if raw in NO:
        return False
    raise UserError(f"{name} must be 1 or 0 (yes/no, true/false), got {raw!r}")


def setting(name: str, environ: Mapping[str, str] | None = None) -> str:
    """The make variable `name` (upper case) as given, or under its lower-case name (make passes
    `make train max_steps=80` on as max_steps, which must not be lost); "" when unset. Both
    given with different values is a UserError."""
    environ = os.environ if environ is None else environ
    upper, lower = environ.get(name, "").strip(), environ.get(name.lower(), "").strip()
    if upper and lower and upper != lower:
        raise UserError(
            f"{name}={upper} and {name.lower()}={lower} are both set; give the setting once"
        )
    return upper or lower
