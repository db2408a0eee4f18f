"""The common role's host firewall, rendered from the role and loaded in network namespaces of
this test's own (no sim stack): SSH answers the user's allowed range (stack_ssh_allowed_cidrs)
and the stack's own hosts only, the stack's ports the stack's hosts only; the local policy
closes the stack's ports to everyone but loopback and leaves the host's other ports alone; a
firewall without an allowed SSH range is refused in one line.

Topology: a bridge in a namespace of its own (nothing routes out of it: the root namespace has
no link into it) and, each on a veth to it, the firewalled host, another stack host, a client
inside the allowed range and one outside it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.sim.conftest import ANSIBLE_VENV

ANSIBLE_DIR = REPO / "ansible"
DEFAULTS = yaml.safe_load((ANSIBLE_DIR / "roles" / "common" / "defaults" / "main.yml").read_text())
SSH = DEFAULTS["common_firewall_ssh_port"]
S3 = DEFAULTS["common_firewall_service_ports"]["seaweedfs_s3"]
WORKER = DEFAULTS["stack_ray_ports"]["worker_min"]
OTHER = 2222  # a port of the host's own, not the stack's
PORTS = [SSH, S3, WORKER, OTHER]
SUBNET = "10.98.7"
ALLOWED = f"{SUBNET}.16/28"  # the user's range: .16 - .31
HOSTS = {"host": 10, "peer": 11, "inside": 20, "outside": 40}  # inside is in ALLOWED, outside not
TAG = f"fw{os.getpid()}"

LISTENER = textwrap.dedent("""
    import socket, sys
    socks = []
    for port in map(int, sys.argv[1:]):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        s.listen(16)
        socks.append(s)
    print("listening", flush=True)
    sys.stdin.read()
""")
PROBE = textwrap.dedent("""
    import json, socket, sys
    def knock(port):
        try:
            socket.create_connection((sys.argv[1], port), timeout=2).close()
            return True
        except OSError:
            return False
    print(json.dumps({port: knock(port) for port in map(int, sys.argv[2:])}))
""")
PLAY = """
- name: Render the host firewall
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Render the common role's table
      ansible.builtin.include_role:
        name: common
        tasks_from: firewall_rules
"""


def ns(name: str) -> str:
    return f"{TAG}-{name}"


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, check=check, timeout=60)


def render(tmp_path: Path, **settings) -> subprocess.CompletedProcess:
    play = tmp_path / "play.yml"
    play.write_text(PLAY)
    env = dict(os.environ)
    env.update(
        PATH=f"{ANSIBLE_VENV / 'bin'}:{env['PATH']}",
        ANSIBLE_CONFIG=str(ANSIBLE_DIR / "ansible.cfg"),
        ANSIBLE_ROLES_PATH=str(ANSIBLE_DIR / "roles"),
        ANSIBLE_NOCOLOR="1",
    )
    extra = json.dumps({"ansible_python_interpreter": "/usr/bin/python3", **settings})
    return subprocess.run(
        [str(ANSIBLE_VENV / "bin" / "ansible-playbook"), "-i", "localhost,", "-c", "local",
         str(play), "-e", extra],
        capture_output=True, text=True, env=env, timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.fixture(scope="module")
def network():
    """The four namespaces on one bridge; the host listens on every probed port."""
    made: list[str] = []
    listener = None
    try:
        sh("ip", "netns", "add", ns("br"))
        made.append(ns("br"))
        sh("ip", "-n", ns("br"), "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", ns("br"), "link", "set", "br0", "up")
        for name, number in HOSTS.items():
            sh("ip", "netns", "add", ns(name))
            made.append(ns(name))
            sh("ip", "link", "add", "eth0", "netns", ns(name), "type", "veth",
               "peer", "name", name, "netns", ns("br"))  # fmt: skip
            sh("ip", "-n", ns("br"), "link", "set", name, "master", "br0", "up")
            sh("ip", "-n", ns(name), "addr", "add", f"{SUBNET}.{number}/24", "dev", "eth0")
            sh("ip", "-n", ns(name), "link", "set", "eth0", "up")
            sh("ip", "-n", ns(name), "link", "set", "lo", "up")
        listener = subprocess.Popen(
            ["ip", "netns", "exec", ns("host"), sys.executable, "-c", LISTENER, *map(str, PORTS)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert listener.stdout.readline().strip() == "listening"
        yield
    finally:
        if listener is not None:  # close the sockets before anything is deleted
            listener.stdin.close()
            listener.wait(timeout=30)
        for name in reversed(made):
            sh("ip", "netns", "delete", name, check=False)


def load(tmp_path: Path, **settings) -> str:
    """Render the role's table with these settings and load it on the host; its text."""
    rules = tmp_path / "stack_firewall.nft"
    proc = render(tmp_path, common_firewall_rules_file=str(rules), **settings)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    loaded = sh("ip", "netns", "exec", ns("host"), "nft", "-f", str(rules), check=False)
    assert loaded.returncode == 0, loaded.stderr
    return rules.read_text()


def answers(prober: str) -> dict[int, bool]:
    proc = sh("ip", "netns", "exec", ns(prober), sys.executable, "-c", PROBE,
              f"{SUBNET}.{HOSTS['host']}", *map(str, PORTS))  # fmt: skip
    return {int(port): answered for port, answered in json.loads(proc.stdout).items()}


def test_ssh_answers_the_allowed_range_and_the_stack_only(network, tmp_path):
    load(
        tmp_path,
        common_firewall_policy="drop",
        stack_private_addresses=[f"{SUBNET}.{HOSTS['host']}", f"{SUBNET}.{HOSTS['peer']}"],
        stack_ssh_allowed_cidrs=[ALLOWED],
    )
    seen = {prober: answers(prober) for prober in ("inside", "outside", "peer")}
    for prober, ports in seen.items():
        print(f"{prober} ({SUBNET}.{HOSTS[prober]}) -> host: {ports}")
    # Inside the allowed range: SSH only. Outside it: nothing at all.
    assert seen["inside"] == {SSH: True, S3: False, WORKER: False, OTHER: False}
    assert seen["outside"] == {SSH: False, S3: False, WORKER: False, OTHER: False}
    # Another stack host: SSH (the jump host's hop) and the stack's ports.
    assert seen["peer"] == {SSH: True, S3: True, WORKER: True, OTHER: False}


def test_the_local_policy_closes_only_the_stacks_ports(network, tmp_path):
    text = load(tmp_path, common_firewall_policy="accept")
    assert "policy accept" in text
    seen = answers("outside")
    print(f"outside -> host (policy accept): {seen}")
    assert seen == {SSH: True, S3: False, WORKER: False, OTHER: True}


@pytest.mark.parametrize("given", [{"stack_ssh_allowed_cidrs": []}, {}])
def test_a_firewall_without_an_allowed_ssh_range_is_refused(tmp_path, given):
    proc = render(
        tmp_path,
        common_firewall_rules_file=str(tmp_path / "rules.nft"),
        common_firewall_policy="drop",
        stack_private_addresses=[f"{SUBNET}.{HOSTS['host']}"],
        **given,
    )
    assert proc.returncode != 0
    assert "set stack_ssh_allowed_cidrs" in proc.stdout, proc.stdout[-2000:]
    assert not (tmp_path / "rules.nft").exists()
