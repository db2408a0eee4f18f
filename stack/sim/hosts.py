"""The hosts of a sim stack: each one an init process (keeper.py) in its own PID, mount, UTS and
IPC namespace inside its network namespace, with private folders bind-mounted over the shared
file system, so that no file crosses hosts except over the network.

Private per host: /tmp, /var/tmp, /run (volatile: emptied by `down`, as a reboot would), home
(/root, /home), logs (/var/log), /srv, supervisor's program folder, the host firewall's rule
file, /etc/hosts (every stack host by name), and every data and configuration folder the roles
define (`<role>_data_dir`, `<role>_config_dir` in ansible/roles/*/defaults: /var/lib/ray,
/etc/mlflow, ...; the Ray temp dir lives in /var/lib/ray). Shared: installed software (/usr,
the venvs in /opt, Debian's packages and their database), as on hosts made from one image.
The controller's stack state (keys, passwords) is hidden from the hosts."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path

import yaml

from core.errors import UserError
from core.paths import REPO_ROOT, state_root
from stack.sim.cluster import Cluster, Host, Process, hosts_folder
from stack.state import Stack

KEEPER = Path(__file__).with_name("keeper.py")
# Debian's python runs the keeper: nothing of the project's venvs is needed inside a host.
SYSTEM_PYTHON = "/usr/bin/python3"
ROLES_DEFAULTS = REPO_ROOT / "ansible" / "roles"
VOLATILE_DIRS = ("/tmp", "/var/tmp", "/run")
PERSISTENT_DIRS = ("/root", "/home", "/srv", "/var/log", "/etc/supervisor/conf.d")
# Files of shared packages that each host writes its own version of (a per-host copy).
PRIVATE_FILES = ("/etc/nftables.conf",)
# Name resolution: written by `up` for each host (every stack host by name).
HOSTS_FILE = "/etc/hosts"
# sshd's configuration, host keys and authorized key; kept across `down` (host keys are pinned).
SSHD_DIR = "/run/stack-sshd"
NAMESPACES = ("--net", "--pid", "--mount", "--uts", "--ipc")
START_TIMEOUT_S = 30
STOP_GRACE_S = 15
# The environment of commands run inside a host: nothing of the caller's shell leaks in.
HOST_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
}


def role_folders() -> list[str]:
    """The top data/config folders of every role (/etc/postgresql for /etc/postgresql/15/mlops)."""
    found = set()
    for defaults in sorted(ROLES_DEFAULTS.glob("*/defaults/main.yml")):
        for key, value in (yaml.safe_load(defaults.read_text()) or {}).items():
            if not key.endswith(("_data_dir", "_config_dir")) or not isinstance(value, str):
                continue
            literal = value.split("{{")[0]
            parts = Path(literal).parts
            if literal.startswith("/etc/") and len(parts) >= 3:
                found.add(str(Path(*parts[:3])))
            elif literal.startswith("/var/lib/") and len(parts) >= 4:
                found.add(str(Path(*parts[:4])))
    return sorted(found)


def private_dirs() -> list[str]:
    return [*VOLATILE_DIRS, *PERSISTENT_DIRS, *role_folders()]


def backing(stack: Stack, host: Host, target: str) -> Path:
    """Where the host's private copy of `target` lives on this machine's disk."""
    return hosts_folder(stack) / host.name / "fs" / target.lstrip("/")


def sshd_folder(stack: Stack, host: Host) -> Path:
    return hosts_folder(stack) / host.name / "sshd"


def prepare(stack: Stack, cluster: Cluster, host: Host) -> list[list[str]]:
    """Create the host's private folders (and any missing mount point); the bind list."""
    binds = []
    for target in private_dirs():
        _mount_point(cluster, Path(target), is_dir=True)
        src = backing(stack, host, target)
        if not src.exists():
            _copy_dir_skeleton(Path(target), src, deep=target == "/var/log")
        binds.append([str(src), target])
    run_dir = backing(stack, host, "/run")
    for name, mode in (("sshd", 0o755), ("lock", 0o1777), (SSHD_DIR.split("/")[-1], 0o700)):
        (run_dir / name).mkdir(exist_ok=True)
        os.chmod(run_dir / name, mode)
    sshd = sshd_folder(stack, host)
    sshd.mkdir(mode=0o700, parents=True, exist_ok=True)
    binds.append([str(sshd), SSHD_DIR])
    for target in PRIVATE_FILES:
        _mount_point(cluster, Path(target), is_dir=False)
        src = backing(stack, host, target)
        if not src.exists():
            src.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(target, src)
        binds.append([str(src), target])
    names = backing(stack, host, HOSTS_FILE)
    names.write_text(hosts_file(stack, cluster))
    os.chmod(names, 0o644)
    binds.append([str(names), HOSTS_FILE])
    return binds


def hostname(stack: Stack, host: Host) -> str:
    return f"{stack.name}-{host.name}"


def hosts_file(stack: Stack, cluster: Cluster) -> str:
    """Every host's /etc/hosts: each stack host's name at its private address, as a cluster's
    DNS would answer (torch.distributed's gloo picks the address its hostname resolves to)."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines += [f"{h.address}\t{hostname(stack, h)} {h.name}" for h in cluster.hosts]
    return "# Written by `make up CLOUD=sim`.\n" + "\n".join(lines) + "\n"


def start(stack: Stack, cluster: Cluster, host: Host) -> Process:
    """Start the host's init; returns it once the private folders are mounted."""
    spec = {
        "binds": prepare(stack, cluster, host),
        "tmpfs": ["/dev/shm"],
        "hide": [str(state_root())],
        "hostname": hostname(stack, host),
        "grace_s": STOP_GRACE_S - 5,
    }
    log = hosts_folder(stack) / host.name / "init.log"
    with log.open("ab") as err:
        os.chmod(log, 0o600)
        # Its own session: the host lives on when the `make up` that made it is killed.
        proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                host.netns,
                "unshare",
                "--pid",
                "--fork",
                "--mount-proc",
                "--mount",
                "--uts",
                "--ipc",
                "--propagation",
                "private",
                SYSTEM_PYTHON,
                str(KEEPER),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            start_new_session=True,
            env=HOST_ENV,
        )
    proc.stdin.write(json.dumps(spec).encode() + b"\n")
    proc.stdin.close()
    ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT_S)
    answer = proc.stdout.readline().decode().strip() if ready else "no answer"
    proc.stdout.close()
    if answer != "ready":
        _end(proc)
        raise UserError(f"sim host {host.name} did not start ({answer}); see {log}")
    init = _child_of(proc.pid)
    if init is None:
        raise UserError(f"sim host {host.name} did not start (its init is gone); see {log}")
    return init


def run_in(host: Host, cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run `cmd` inside the host (all its namespaces), as root, in its file system."""
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    return subprocess.run(enter(host) + cmd, env=HOST_ENV, **kwargs)


def enter(host: Host) -> list[str]:
    if host.init is None:
        raise RuntimeError(f"host {host.name} is not running")
    return ["nsenter", f"--target={host.init.pid}", *NAMESPACES, "--wdns=/", "--"]


def stop(hosts: list[Host]) -> None:
    """SIGTERM each host's init (it passes it on to every process of its host), all at once;
    SIGKILL after a grace period what still runs (which ends a whole PID namespace)."""
    running = [h.init for h in hosts if h.init is not None and h.init.alive()]
    for init in running:
        os.kill(init.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while any(i.alive() for i in running) and time.monotonic() < deadline:
        time.sleep(0.1)
    for init in running:
        if init.alive():
            os.kill(init.pid, signal.SIGKILL)
    while any(i.alive() for i in running):
        time.sleep(0.1)


def clear_volatile(stack: Stack, host: Host) -> None:
    for target in VOLATILE_DIRS:
        shutil.rmtree(backing(stack, host, target), ignore_errors=True)


def remove_mount_points(cluster: Cluster) -> None:
    """Remove the empty directories (or files) this stack made in the root file system to
    mount on, unless a package has taken them over since."""
    remove_if_unused(reversed(cluster.created_mount_points))
    cluster.created_mount_points = []


def remove_if_unused(paths) -> None:
    """Remove each path that is an empty directory or file no Debian package owns."""
    for path in map(Path, paths):
        if path.is_dir() and not any(path.iterdir()) and not _owned_by_package(path):
            path.rmdir()
        elif path.is_file() and path.stat().st_size == 0 and not _owned_by_package(path):
            path.unlink()


def _mount_point(cluster: Cluster, path: Path, is_dir: bool) -> None:
    if path.exists():
        return
    missing = [p for p in [path, *path.parents] if not p.exists()]
    for p in reversed(missing):
        if p == path and not is_dir:
            p.touch(mode=0o644)
        else:
            p.mkdir(mode=0o755)
        cluster.created_mount_points.append(str(p))


def _copy_dir_skeleton(original: Path, copy: Path, deep: bool) -> None:
    """`copy` as an empty directory with `original`'s owner and mode (and, when `deep`, its
    subdirectories: /var/log/apt and the like that programs expect)."""
    copy.mkdir(parents=True, exist_ok=True)
    _same_owner_and_mode(original, copy)
    if deep and original.is_dir():
        for sub in original.rglob("*"):
            if sub.is_dir() and not sub.is_symlink():
                twin = copy / sub.relative_to(original)
                twin.mkdir(exist_ok=True)
                _same_owner_and_mode(sub, twin)


def _same_owner_and_mode(original: Path, copy: Path) -> None:
    if not original.exists():
        return
    st = original.stat()
    os.chown(copy, st.st_uid, st.st_gid)
    os.chmod(copy, st.st_mode & 0o7777)


def _child_of(pid: int) -> Process | None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except FileNotFoundError:
            return None
        if children:
            return Process.of(int(children[0]))
        time.sleep(0.05)
    return None


def _end(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _owned_by_package(path: Path) -> bool:
    return subprocess.run(["dpkg-query", "-S", str(path)], capture_output=True).returncode == 0
