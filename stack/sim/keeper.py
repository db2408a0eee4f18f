"""The init of one sim host: PID 1 of the host's PID namespace (standalone: run by Debian's
python3 under `unshare --pid --fork --mount-proc --mount --uts --ipc`, imports nothing of the
project).

It mounts the host's private folders over the shared file system, gives the host a /dev/shm
and a hostname of its own, hides the controller's stack state, prints `ready`, then reaps
orphans (daemons started with nsenter end up its children) until SIGTERM. On SIGTERM it sends
SIGTERM to every process of the host, waits for them a while, and exits: the kernel then kills
whatever is left in the PID namespace.

On stdin: a JSON object {"binds": [[source, target], ...], "tmpfs": [target, ...],
"hide": [path, ...], "hostname": name, "grace_s": seconds}."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import sys
import time

MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_NOSUID = 2
MS_NODEV = 4
MNT_DETACH = 2
# The root namespace's named network namespaces: a copy of these mounts would keep the other
# hosts' namespaces alive for as long as this host lives.
NETNS_DIR = "/run/netns"

libc = ctypes.CDLL(None, use_errno=True)


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    result = libc.mount(
        source.encode(),
        target.encode(),
        fstype.encode() if fstype else None,
        ctypes.c_ulong(flags),
        data.encode() if data else None,
    )
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def set_up(spec: dict) -> None:
    mount("none", "/", None, MS_REC | MS_PRIVATE, None)
    libc.umount2(NETNS_DIR.encode(), MNT_DETACH)  # fails harmlessly where nothing is mounted
    # Open every source before mounting anything: a source below a target (a state folder
    # under /tmp) would be hidden once that target is mounted over.
    sources = [os.open(src, os.O_PATH) for src, _ in spec["binds"]]
    # Parents before children (/run before /run/stack-sshd).
    order = sorted(range(len(sources)), key=lambda i: spec["binds"][i][1].count("/"))
    for i in order:
        mount(f"/proc/self/fd/{sources[i]}", spec["binds"][i][1], None, MS_BIND, None)
    for fd in sources:
        os.close(fd)
    for target in spec["tmpfs"]:
        mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    for path in spec["hide"]:
        if os.path.isdir(path):
            mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0700,size=1m")
    socket.sethostname(spec["hostname"])


def serve(grace_s: float) -> None:
    stopping = {signal.SIGTERM, signal.SIGINT}
    watched = stopping | {signal.SIGCHLD}
    for sig in watched:
        # A handler (not SIG_DFL): an init ignores signals it has no handler for.
        signal.signal(sig, lambda *_: None)
    signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    while True:
        reap()
        info = signal.sigtimedwait(watched, 5)
        if info is not None and info.si_signo in stopping:
            break
    try:
        os.kill(-1, signal.SIGTERM)  # every process of this PID namespace but this one
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not reap() and not others_alive():
            return
        time.sleep(0.2)


def reap() -> bool:
    """Collect every exited child; True when some child is still running."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True


def others_alive() -> bool:
    return any(name.isdigit() and name != "1" for name in os.listdir("/proc"))


def main() -> None:
    spec = json.loads(sys.stdin.readline())
    try:
        set_up(spec)
    except OSError as exc:
        print(f"failed: {exc}", flush=True)
        sys.exit(1)
    print("ready", flush=True)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.chdir("/")
    serve(float(spec.get("grace_s", 15)))


if __name__ == "__main__":
    main()
