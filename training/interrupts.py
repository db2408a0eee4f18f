"""Ctrl-C and SIGTERM (`make cancel`, a stopped Ray job, a lease ending) stop a run alike.

Ray may wrap the KeyboardInterrupt they raise inside `fit()` into an error of its own;
`requested()` still tells a stop from a failure."""

from __future__ import annotations

import signal
import threading

_requested = threading.Event()


def _stop(signum, frame) -> None:
    _requested.set()
    raise KeyboardInterrupt


def install() -> None:
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)


def requested() -> bool:
    return _requested.is_set()
