"""One command at a time per stack: `make up`/`down`/`backup` hold `.stack/<name>/lock`.

The lock is an `fcntl.flock` on that file, so the kernel lets it go when its holder dies (even
by SIGKILL); the file also says which command holds it and its PID, for the one that is
refused. A file left by a dead holder is taken over with a line saying so."""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from pathlib import Path

from core.errors import UserError

EXIT_LOCKED = 2


class StackBusy(UserError):
    """Another command holds the stack's lock."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class StackLock:
    """Held for the whole command; released when the process ends."""

    def __init__(self, path: Path, command: str) -> None:
        self.path = path
        self.command = command
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise StackBusy(
                f"`{holder.get('command', 'another command')}` (PID {holder.get('pid', '?')}) is "
                f"running on this stack; wait for it to finish, then run this again"
            ) from None
        stale = _holder(fd)
        if stale.get("pid") and stale["pid"] != os.getpid():
            how = "no longer running" if not _alive(stale["pid"]) else "no longer holding it"
            print(
                f"taking over the lock of `{stale.get('command', '?')}` (PID {stale['pid']}, "
                f"{how})",
                file=sys.stderr,
            )
        record = json.dumps(
            {"command": self.command, "pid": os.getpid(), "since": time.strftime("%FT%T%z")}
        )
        os.ftruncate(fd, 0)
        os.pwrite(fd, record.encode() + b"\n", 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        if self.path.exists():
            os.ftruncate(self._fd, 0)  # an ended command leaves no stale holder behind
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> StackLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (ValueError, UnicodeDecodeError):
        return {}
