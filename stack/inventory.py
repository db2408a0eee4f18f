"""The Ansible inventory of a stack, one builder for every target, written into its state
folder before every `up`/`down`: the hosts a target made (groups `services`, `ray_head`,
`ray_workers`), how Ansible reaches them (this machine itself, or SSH through the gateway with
pinned host keys), the target's own facts and every stack setting (stack/settings.py)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from core.paths import REPO_ROOT
from core.state import HostRecord
from stack import settings
from stack.access import Access
from stack.state import SERVICES_ENDPOINTS, Stack

GROUPS = ("services", "ray_head", "ray_workers")
LOCAL_INVENTORY = REPO_ROOT / "ansible" / "inventories" / "local"


@dataclass
class Host:
    name: str
    address: str  # its private address (what the other stack hosts reach it at)
    groups: tuple[str, ...]
    vars: dict = field(default_factory=dict)  # host variables of the target's own


@dataclass
class Hosts:
    """What a target made: its hosts, and how this machine reaches them."""

    hosts: list[Host]
    access: Access | None = None  # None: Ansible runs on this machine (connection local)
    vars: dict = field(default_factory=dict)  # the target's own facts for every host

    def records(self) -> list[HostRecord]:
        return [HostRecord(h.name, h.address, list(h.groups)) for h in self.hosts]


def local_hosts() -> Hosts:
    """This machine in every group, as ansible/inventories/local describes it (that file also
    serves `ansible-playbook -i ansible/inventories/local/hosts.yml` by hand)."""
    inventory = yaml.safe_load((LOCAL_INVENTORY / "hosts.yml").read_text())["all"]
    names = {n for g in GROUPS for n in (inventory["children"][g]["hosts"] or {})}
    # group_vars/ is found next to an inventory file: this one lives elsewhere, so inline them.
    group_vars = yaml.safe_load((LOCAL_INVENTORY / "group_vars" / "all.yml").read_text())
    hosts = [Host(name, "127.0.0.1", GROUPS) for name in sorted(names)]
    return Hosts(hosts, None, {**inventory.get("vars", {}), **group_vars})


def render(stack: Stack, made: Hosts, stack_vars: dict | None = None) -> dict:
    """The inventory of `made`, with the stack settings' variables (stack/settings.py, read
    from the environment unless given)."""
    variables: dict = {
        "ansible_python_interpreter": "/usr/bin/python3",
        "stack_state_dir": str(stack.folder),
        "ray_training_package_src": str(REPO_ROOT),
    }
    way_in = made.access
    if way_in is not None:
        variables.update(
            ansible_user=way_in.user,
            ansible_ssh_private_key_file=str(way_in.key),
            # ansible.cfg checks host keys too; said here so no environment can turn it off.
            ansible_host_key_checking=True,
            ansible_control_path_dir=str(way_in.control_dir),
            stack_private_addresses=[h.address for h in made.hosts],
            # This machine reaches the services through tunnels: it derives endpoints.json.
            stack_endpoints_file_name=SERVICES_ENDPOINTS,
        )
    variables.update(made.vars)
    variables.update(
        settings.inventory_variables(stack.cloud) if stack_vars is None else stack_vars
    )
    children: dict = {group: {"hosts": {}} for group in GROUPS}
    described: set[str] = set()
    for host in made.hosts:
        host_vars = dict(host.vars)
        if way_in is not None:
            reach = way_in.gateway if "services" in host.groups else host.address
            host_vars = {
                "ansible_host": reach,
                "stack_private_address": host.address,
                "ansible_ssh_common_args": way_in.ansible_args(reach),
                **host_vars,
            }
        for group in host.groups:
            # A host's variables once; its other groups only name it.
            children[group]["hosts"][host.name] = host_vars or None
            if host_vars and host.name not in described:
                described.add(host.name)
                host_vars = {}
    return {"all": {"vars": variables, "children": children}}


def write(stack: Stack, inventory: dict) -> Path:
    text = f"# Written by `make up` for stack {stack.name}; edits are overwritten.\n"
    text += yaml.safe_dump(inventory, sort_keys=False, width=1000)
    tmp = stack.inventory.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    tmp.replace(stack.inventory)
    return stack.inventory
