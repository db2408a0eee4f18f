"""sshd on the sim hosts: one per host (Debian's openssh-server) that accepts only the stack's
key, host keys generated here and pinned in the stack's known_hosts. How this machine logs in
(the head directly, every other host through it) is stack/access.py's, as on Chameleon."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from core.errors import UserError
from stack.access import Access, key_file, keygen
from stack.sim import hosts
from stack.sim.cluster import Cluster, Host
from stack.state import Stack

USER = "root"
SSH_PORT = 22
SSHD = "/usr/sbin/sshd"
ANSWER_TIMEOUT_S = 30


def access(stack: Stack, cluster: Cluster) -> Access:
    """How this machine logs in to the sim's hosts: through the head, as on Chameleon."""
    return Access(stack.folder, USER, cluster.head.address)


def configure(stack: Stack, host: Host) -> None:
    """The host's sshd files: its host key (generated once, kept across `down`), the stack's
    public key as the only authorized one, and sshd_config."""
    folder = hosts.sshd_folder(stack, host)
    host_key = folder / "ssh_host_ed25519_key"
    if not host_key.is_file():
        keygen(host_key, f"{stack.name}-{host.name}")
    public = Path(f"{key_file(stack.folder)}.pub").read_text()
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
    _write(access(stack, cluster).known_hosts, "\n".join(lines) + "\n")


def wait_answering(stack: Stack, cluster: Cluster) -> None:
    way_in = access(stack, cluster)
    for host in cluster.hosts:
        deadline = time.monotonic() + ANSWER_TIMEOUT_S
        while not way_in.answers(host.address):
            if time.monotonic() > deadline:
                raise UserError(
                    f"sim host {host.name} ({host.address}) does not answer SSH; its sshd log: "
                    f"{hosts.backing(stack, host, '/var/log')}/stack-sshd.log"
                )
            time.sleep(0.5)


def close_connections(stack: Stack) -> None:
    """End every SSH connection master of this stack (Ansible keeps them ~60 s)."""
    folder = Access(stack.folder, USER, "").control_dir
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


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.chmod(0o600)
    tmp.replace(path)
