"""Yes/no knobs (PURGE, DRY_RUN, ...): one parser, so `PURGE=false` never means yes."""

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
