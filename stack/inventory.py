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
    variables.update(object_store_variables())
    text = "# Written by `make up` for stack " + stack.name + "; edits are overwritten.\n"
    text += yaml.safe_dump(inventory, sort_keys=False)
    tmp = stack.inventory.with_suffix(".tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o600)
    tmp.replace(stack.inventory)


# Environment variable -> inventory variable of the object store (site.yml checks the values
# before anything changes; keys themselves are read by Ansible, never written here).
OBJECT_STORE_SETTINGS = {
    "OBJECT_STORE": "stack_object_store",
    "SEAWEEDFS_DOWNLOAD_URL": "seaweedfs_download_url",
    "S3_ENDPOINT": "stack_s3_endpoint_url",
    "S3_ACCESS_KEY_FILE": "stack_s3_access_key_file",
    "S3_SECRET_KEY_FILE": "stack_s3_secret_key_file",
}


def object_store_variables() -> dict[str, str]:
    variables = {
        name: os.environ[env] for env, name in OBJECT_STORE_SETTINGS.items() if os.environ.get(env)
    }
    if "stack_s3_endpoint_url" in variables and "stack_object_store" not in variables:
        variables["stack_object_store"] = "external"
    if os.environ.get("MINIO_DOWNLOAD_URL") and "stack_object_store" not in variables:
        variables["stack_object_store"] = "minio"  # refused by site.yml with what to do instead
    return variables
