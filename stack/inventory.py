"""The Ansible inventory of a stack, written into its state folder before every `up`/`down`.

`local`: this machine in every group (ansible/inventories/local/hosts.yml), plus the variables
that tie it to this stack: its state folder and the training package to install on Ray."""

from __future__ import annotations

import os

import yaml

from core.paths import REPO_ROOT
from stack.state import Stack

LOCAL_INVENTORY = REPO_ROOT / "ansible" / "inventories" / "local"


def write(stack: Stack) -> None:
    inventory = yaml.safe_load((LOCAL_INVENTORY / "hosts.yml").read_text())
    variables = inventory["all"].setdefault("vars", {})
    # group_vars/ is found next to an inventory file: this one lives elsewhere, so inline them.
    variables.update(yaml.safe_load((LOCAL_INVENTORY / "group_vars" / "all.yml").read_text()))
    variables["stack_state_dir"] = str(stack.folder)
    variables["ray_training_package_src"] = str(REPO_ROOT)
    # Where the MinIO server binary comes from: a URL or a file on this machine.
    if os.environ.get("MINIO_DOWNLOAD_URL"):
        variables["minio_download_url"] = os.environ["MINIO_DOWNLOAD_URL"]
    text = "# Written by `make up` for stack " + stack.name + "; edits are overwritten.\n"
    text += yaml.safe_dump(inventory, sort_keys=False)
    tmp = stack.inventory.with_suffix(".tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o600)
    tmp.replace(stack.inventory)
