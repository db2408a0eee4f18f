"""The Ansible inventory of a sim stack, in the shape the Chameleon target renders too: the head
(services + ray_head) reached directly, every worker through it as jump host, host keys pinned
in the stack's known_hosts, and the list of the stack's private addresses for the firewall."""

from __future__ import annotations

import os
import shlex

import yaml

from core.paths import REPO_ROOT
from stack.inventory import object_store_variables
from stack.sim import sshd
from stack.sim.cluster import Cluster, Host
from stack.state import SERVICES_ENDPOINTS, Stack


def render(stack: Stack, cluster: Cluster) -> dict:
    known_hosts = sshd.known_hosts_file(stack)
    pinned = f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes"

    def host_vars(host: Host) -> dict:
        variables = {
            "ansible_host": host.address,
            "stack_private_address": host.address,
        }
        if host.is_gateway:
            variables["ansible_ssh_common_args"] = pinned
            # The services host trains nothing: every host shares this machine's cores, and
            # Ray Train's workers go to the worker hosts, one per host.
            variables["ray_num_cpus"] = 0
        else:
            proxy = sshd.proxy_command(stack, cluster)
            variables["ansible_ssh_common_args"] = f"-o ProxyCommand={shlex.quote(proxy)} {pinned}"
        return variables

    workers = {h.name: host_vars(h) for h in cluster.workers}
    return {
        "all": {
            "vars": {
                "ansible_user": sshd.USER,
                "ansible_ssh_private_key_file": str(sshd.key_file(stack)),
                # ansible.cfg turns host key checking off for the local target; never here.
                "ansible_host_key_checking": True,
                "ansible_control_path_dir": str(sshd.control_dir(stack)),
                "ansible_python_interpreter": "/usr/bin/python3",
                "stack_state_dir": str(stack.folder),
                "stack_private_addresses": [h.address for h in cluster.hosts],
                # SSH from outside the stack: the controller only (the host firewall).
                "stack_ssh_allowed_cidrs": [f"{cluster.controller_address}/32"],
                "ray_training_package_src": str(REPO_ROOT),
                # No route out: the hosts use this machine's packages (shared /usr), never apt's
                # servers.
                "stack_apt_update_cache": False,
                "stack_endpoints_file_name": SERVICES_ENDPOINTS,
                **object_store_variables(),
            },
            "children": {
                "services": {"hosts": {cluster.head.name: host_vars(cluster.head)}},
                "ray_head": {"hosts": {cluster.head.name: None}},
                "ray_workers": {"hosts": workers},
            },
        }
    }


def write(stack: Stack, cluster: Cluster) -> None:
    text = f"# Written by `make up CLOUD=sim` for stack {stack.name}; edits are overwritten.\n"
    text += yaml.safe_dump(render(stack, cluster), sort_keys=False, width=1000)
    tmp = stack.inventory.with_suffix(".tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o600)
    tmp.replace(stack.inventory)
