"""The Ansible inventory of a Chameleon stack, rendered from `terraform output -json` (never
from the project's server list, which other users of a shared project fill too).

Same shape as `sim`'s (BRIEF's inventory contract): the gateway (services and Ray head) at its
floating IP, every other host at its private address through it, host keys pinned."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from core.errors import UserError
from core.paths import REPO_ROOT
from stack.access import Access
from stack.state import SERVICES_ENDPOINTS

SERVICES_ROLE = "services"


def render(
    outputs: dict,
    access: Access,
    state_dir: Path,
    data_volume_id: str | None,
    ssh_allowed_cidrs: list[str],
) -> dict:
    hosts = outputs.get("hosts") or {}
    services = [name for name, h in hosts.items() if h.get("role") == SERVICES_ROLE]
    if len(services) != 1:
        raise UserError(
            f"terraform output `hosts` names {len(services)} services host(s), not one; "
            "see infra/outputs.tf"
        )
    (gateway,) = services
    strict = " ".join(access.strict())
    children: dict = {"services": {"hosts": {}}, "ray_head": {"hosts": {}}, "ray_workers": {}}
    children["services"]["hosts"][gateway] = {
        "ansible_host": access.gateway,
        "stack_private_address": hosts[gateway]["private_address"],
        "ansible_ssh_common_args": strict,
    }
    children["ray_head"]["hosts"][gateway] = None
    workers = {
        name: {
            "ansible_host": h["private_address"],
            "stack_private_address": h["private_address"],
            "ansible_ssh_common_args": f'-o ProxyCommand="{access.proxy_command()}" {strict}',
        }
        for name, h in sorted(hosts.items())
        if name != gateway
    }
    children["ray_workers"] = {"hosts": workers}
    variables = {
        "ansible_user": access.user,
        "ansible_ssh_private_key_file": str(access.key),
        "ansible_python_interpreter": "/usr/bin/python3",
        "stack_private_addresses": sorted(h["private_address"] for h in hosts.values()),
        # SSH from outside the stack: SSH_ALLOWED_CIDR only (the host firewall; bare-metal sites
        # enforce no security group).
        "stack_ssh_allowed_cidrs": ssh_allowed_cidrs,
        "stack_state_dir": str(state_dir),
        "ray_training_package_src": str(REPO_ROOT),
        "stack_endpoints_file_name": SERVICES_ENDPOINTS,
    }
    if data_volume_id:
        variables["stack_data_volume_id"] = data_volume_id
    return {"all": {"vars": variables, "children": children}}


def write(path: Path, inventory: dict, stack_name: str) -> None:
    text = f"# Written by `make up` for stack {stack_name} from Terraform's outputs.\n"
    text += yaml.safe_dump(inventory, sort_keys=False)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    tmp.replace(path)
