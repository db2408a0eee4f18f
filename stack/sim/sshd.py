"""SSH into the sim hosts: the stack's key, one sshd per host (Debian's openssh-server) that
accepts only that key, host keys pinned in the stack's known_hosts, and the command lines that
reach the head directly and every other host through it (ProxyCommand), as on Chameleon."""

from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path

from core.errors import UserError
from stack.sim import hosts
from stack.sim.cluster import Cluster, Host
from stack.state import Stack

USER = "root"
SSH_PORT = 22
SSHD = "/usr/sbin/sshd"
CONNECT_TIMEOUT_S = 5
ANSWER_TIMEOUT_S = 30


def key_file(stack: Stack) -> Path:
    return stack.folder / "secrets" / "ssh_key"


def known_hosts_file(stack: Stack) -> Path:
    return stack.folder / "known_hosts"


def control_dir(stack: Stack) -> Path:
    """Where Ansible's (and our) SSH connection masters keep their sockets: `down` closes them
    before the network goes."""
    return stack.folder / "ssh-control"


def ensure_key(stack: Stack) -> Path:
    """The stack's SSH key (ed25519, 0600), generated once."""
    key = key_file(stack)
    key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not key.is_file():
        _keygen(key, f"stack-{stack.name}")
    key.chmod(0o600)
    return key


def configure(stack: Stack, host: Host) -> None:
    """The host's sshd files: its host key (generated once, kept across `down`), the stack's
    public key as the only authorized one, and sshd_config."""
    folder = hosts.sshd_folder(stack, host)
    host_key = folder / "ssh_host_ed25519_key"
    if not host_key.is_file():
        _keygen(host_key, f"{stack.name}-{host.name}")
    public = Path(f"{key_file(stack)}.pub").read_text()
    _write(folder / "authorized_keys", public)
    d = hosts.SSHD_DIR
    forwarding = "yes" if host.is_gateway else "no"  # only the jump host forwards
    _write(
        folder / "sshd_config",
        "\n".join(
            [
                "# Written by `make up CLOUD=sim`: this host's sshd (key login only).",
                f"ListenAddress {host.address}:{SSH_PORT}",
                f"HostKey {d}/ssh_host_ed25519_key",
                f"AuthorizedKeysFile {d}/authorized_keys",
                f"PidFile {d}/sshd.pid",
                "PermitRootLogin prohibit-password",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                # PAM's session modules (pam_loginuid) fail inside a namespace; no password
                # is ever accepted, so PAM has nothing to add here.
                "UsePAM no",
                f"AllowTcpForwarding {forwarding}",
                "AllowAgentForwarding no",
                "X11Forwarding no",
                "PermitTunnel no",
                "StrictModes yes",
                "MaxStartups 30:30:60",
                "Subsystem sftp /usr/lib/openssh/sftp-server",
                "",
            ]
        ),
    )


def start(stack: Stack, host: Host) -> None:
    """Start the host's sshd (it daemonizes: the host's init adopts it)."""
    cmd = [SSHD, "-f", f"{hosts.SSHD_DIR}/sshd_config", "-E", "/var/log/stack-sshd.log"]
    proc = hosts.run_in(host, cmd)
    if proc.returncode != 0:
        raise UserError(
            f"sshd did not start on sim host {host.name}: {proc.stderr.strip()[:200]}; "
            f"its log: {hosts.backing(stack, host, '/var/log')}/stack-sshd.log"
        )


def pin_host_keys(stack: Stack, cluster: Cluster) -> None:
    """known_hosts with each host's own public host key at its address: pinned when made, so
    no first contact is ever trusted blindly."""
    lines = []
    for host in cluster.hosts:
        key = hosts.sshd_folder(stack, host) / "ssh_host_ed25519_key.pub"
        kind, blob = key.read_text().split()[:2]
        lines.append(f"{host.address} {kind} {blob}")
    _write(known_hosts_file(stack), "\n".join(lines) + "\n")


def common_options(stack: Stack) -> list[str]:
    return [
        "-i",
        str(key_file(stack)),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        f"UserKnownHostsFile={known_hosts_file(stack)}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        f"ConnectTimeout={CONNECT_TIMEOUT_S}",
    ]


def proxy_command(stack: Stack, cluster: Cluster) -> str:
    """The ProxyCommand that reaches a host through the head (ssh -W)."""
    inner = [
        "ssh",
        "-W",
        "%h:%p",
        "-q",
        "-i",
        str(key_file(stack)),
        "-o",
        f"UserKnownHostsFile={known_hosts_file(stack)}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        f"{USER}@{cluster.head.address}",
    ]
    return shlex.join(inner)


def ssh_command(stack: Stack, cluster: Cluster, host: Host, *command: str) -> list[str]:
    """`ssh` to `host` as Ansible reaches it (through the head unless it is the head)."""
    cmd = ["ssh", *common_options(stack)]
    if not host.is_gateway:
        cmd += ["-o", f"ProxyCommand={proxy_command(stack, cluster)}"]
    return [*cmd, f"{USER}@{host.address}", *command]


def answers(stack: Stack, cluster: Cluster, host: Host) -> bool:
    proc = subprocess.run(
        ssh_command(stack, cluster, host, "true"),
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    return proc.returncode == 0


def wait_answering(stack: Stack, cluster: Cluster) -> None:
    for host in cluster.hosts:
        deadline = time.monotonic() + ANSWER_TIMEOUT_S
        while not answers(stack, cluster, host):
            if time.monotonic() > deadline:
                raise UserError(
                    f"sim host {host.name} ({host.address}) does not answer SSH; its sshd log: "
                    f"{hosts.backing(stack, host, '/var/log')}/stack-sshd.log"
                )
            time.sleep(0.5)


def close_connections(stack: Stack) -> None:
    """End every SSH connection master of this stack (Ansible keeps them ~60 s)."""
    folder = control_dir(stack)
    if not folder.is_dir():
        return
    for socket in folder.iterdir():
        subprocess.run(
            ["ssh", "-o", f"ControlPath={socket}", "-O", "exit", "stack-sim-host"],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=30,
        )
        socket.unlink(missing_ok=True)


def _keygen(path: Path, comment: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )
    path.chmod(0o600)


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.chmod(0o600)
    tmp.replace(path)
