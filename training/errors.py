"""Errors a user can cause: the CLI prints them as one line and exits non-zero."""


class UserError(Exception):
    """Something the user can fix (bad knob, bad data, no network). The message says how."""
