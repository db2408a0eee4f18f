"""Errors a user can cause: the CLI prints them as one line and exits non-zero."""


class UserError(Exception):
    """Something the user can fix (bad knob, bad data, no network). The message says how."""


def root_cause(exc: BaseException) -> str:
    """The innermost error of a chain (Ray wraps a worker's error twice), in one line."""
    seen = exc
    while seen.__cause__ is not None or getattr(seen, "cause", None) is not None:
        seen = seen.__cause__ or seen.cause
    lines = [line for line in str(seen).strip().splitlines() if line.strip()]
    return f"{type(seen).__name__}: {lines[-1] if lines else ''}"
