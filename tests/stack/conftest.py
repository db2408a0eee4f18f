"""Fixtures for the stack tests: the Ansible venv, a converged local stack, and cleanup.

These tests configure this machine itself (apt packages, system users, services under
supervisor), so they need root, as on CI. Services the tests started are stopped at the end
through supervisorctl (never by process name), and supervisord is shut down again when the
tests were the ones to start it.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from stackenv import (
    ANSIBLE_DIR,
    ANSIBLE_VENV,
    STACK_PROGRAMS,
    STACK_TABLES,
    WEED,
    make,
    nft_tables,
    run,
    supervisor_status,
    tail,
)


def pytest_collection_modifyitems(items):
    """Molecule scenarios first, then the tests on the shared site.yml stack, then the make up
    -> down end to end: each scenario reconverges this host with a state folder of its own (the
    Ray environment file, the generated passwords), which would change the shared stack under
    the tests that read it."""
    here = Path(__file__).parent

    def phase(item) -> int:
        if item.path.name == "test_stack_cli.py":
            return 2
        return 1 if "stack" in getattr(item, "fixturenames", ()) else 0

    slots = [i for i, item in enumerate(items) if here in item.path.parents]
    ordered = sorted((items[i] for i in slots), key=phase)  # stable: file order within a phase
    for i, item in zip(slots, ordered, strict=True):
        items[i] = item


@pytest.fixture(scope="session", autouse=True)
def host_firewall_before() -> dict:
    """The host's firewall as the session found it, before any stack: its boot-time rule file
    and the stack's tables loaded (none, on a clean machine)."""
    config = Path("/etc/nftables.conf")
    return {"config": config.read_bytes() if config.exists() else None, "tables": nft_tables()}


@pytest.fixture(scope="session", autouse=True)
def stop_test_services():
    """Yields a function that stops the stack programs these tests started (never ones that
    ran before the session); it runs once more at the end, and then unloads the nftables tables
    of the stack's that the tests loaded (the stack fixture puts the host firewall back)."""
    if os.geteuid() != 0:
        pytest.skip("stack tests configure this machine (apt, users, services): run them as root")
    if not os.access(WEED, os.X_OK):
        pytest.skip(f"no weed binary at {WEED}: bash tools/seaweedfs/build.sh builds it")
    if not (ANSIBLE_VENV / "bin" / "ansible-playbook").exists():
        pytest.skip(
            f"no Ansible venv at {ANSIBLE_VENV}: `make ansible-venv` builds it"
        )
    before = supervisor_status()
    tables_before = nft_tables()

    def stop() -> None:
        after = supervisor_status()
        if after is None:
            return
        for program in STACK_PROGRAMS:
            was_running = before is not None and before.get(program) == "RUNNING"
            if program in after and not was_running:
                subprocess.run(["supervisorctl", "stop", program], capture_output=True, timeout=120)

    yield stop
    stop()
    if before is None and supervisor_status() is not None:
        subprocess.run(["supervisorctl", "shutdown"], capture_output=True, timeout=120)
    for table in sorted(nft_tables() & set(STACK_TABLES) - tables_before):
        subprocess.run(["nft", "delete", "table", "inet", table], capture_output=True)


@pytest.fixture(scope="session")
def stack(tmp_path_factory, stop_test_services) -> Iterator[dict]:
    """The one local stack of the session, made as a user makes it: `make up` into a state
    folder of the session's own, and right away a second `make up` (molecule scenarios in
    between would change the generated passwords on this host). The tests that read a stack
    share it, and test_stack_cli.py goes on with it to `make down`. At the end of the session
    its services stop and the host's firewall is left as found."""
    stop_test_services()  # what the molecule scenarios left running holds the stack's ports
    stack_dir = tmp_path_factory.mktemp("stack")
    first = make(stack_dir, "up")
    assert first.returncode == 0, tail(first)
    second = make(stack_dir, "up")
    state = stack_dir / "local"
    endpoints = json.loads((state / "endpoints.json").read_text())
    yield {"dir": stack_dir, "state": state, "first": first, "second": second,
           "endpoints": endpoints}  # fmt: skip
    # The services stopped, the host's firewall as the session found it (down.yml's last play).
    stop_test_services()
    inventory = str(ANSIBLE_DIR / "inventories" / "local" / "hosts.yml")
    playbook = str(ANSIBLE_VENV / "bin" / "ansible-playbook")
    proc = run([playbook, "-i", inventory, str(Path(__file__).with_name("firewall_down.yml"))])
    assert proc.returncode == 0, tail(proc)
