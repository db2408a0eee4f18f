"""The make variables of `make up`, in one table: the stack settings that reach the Ansible
inventory (the same on every target that honours them) and the ones only one target reads.
A setting given to a target that cannot honour it is refused in one line before anything
runs, never silently dropped."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass

from core.errors import UserError
from core.flags import flag

ALL = ("local", "sim", "chameleon")


@dataclass(frozen=True)
class Setting:
    name: str  # the make variable
    variable: str  # the inventory variable it becomes ("" = read by the target itself)
    targets: tuple[str, ...]
    meaning: str


SETTINGS = (
    Setting("OBJECT_STORE", "stack_object_store", ALL,
            "seaweedfs (default) or external; minio is refused with what to do instead"),
    Setting("S3_ENDPOINT", "stack_s3_endpoint_url", ALL,
            "an S3 endpoint that already runs (implies OBJECT_STORE=external)"),
    Setting("S3_ACCESS_KEY_FILE", "stack_s3_access_key_file", ALL,
            "a file holding the external endpoint's access key"),
    Setting("S3_SECRET_KEY_FILE", "stack_s3_secret_key_file", ALL,
            "a file holding the external endpoint's secret key"),
    Setting("SEAWEEDFS_DOWNLOAD_URL", "seaweedfs_download_url", ALL,
            "where `weed` comes from: a URL, or a binary on this machine"),
    Setting("MINIO_DOWNLOAD_URL", "", ALL, "refused: MinIO is no longer installed"),
    Setting("SSH_ALLOWED_CIDR", "stack_ssh_allowed_cidrs", ("sim", "chameleon"),
            "who may SSH to the gateway (the host firewall; on KVM also the security group)"),
    Setting("HEALTH_TIMEOUT", "", ALL, "seconds `make up` waits for the services to answer"),
    Setting("SIM_WORKERS", "", ("sim",), "worker hosts of a sim stack"),
    Setting("SIM_HOSTS_ONLY", "", ("sim",), "make the sim hosts and their inventory only"),
    Setting("SITE", "", ("chameleon",), "the Chameleon site"),
    Setting("GPU_FLAVOR", "", ("chameleon",), "KVM: the GPU flavor"),
    Setting("NODE_TYPE", "", ("chameleon",), "bare metal: the GPU node type"),
    Setting("GPU_NODES", "", ("chameleon",), "GPU hosts (Ray workers)"),
    Setting("LEASE_HOURS", "", ("chameleon",), "the lease's length"),
    Setting("START", "", ("chameleon",), "when the lease starts (an advance reservation)"),
    Setting("ALLOW_SSH_FROM_ANYWHERE", "", ("chameleon",), "allows SSH_ALLOWED_CIDR=0.0.0.0/0"),
    Setting("LEASE_TIMEOUT", "", ("chameleon",), "seconds to wait for the lease to start"),
    Setting("SSH_TIMEOUT", "", ("chameleon",), "seconds to wait for the hosts' SSH"),
)  # fmt: skip
BY_NAME = {s.name: s for s in SETTINGS}
DEFAULT_HEALTH_TIMEOUT = 90  # seconds for the services to answer after configuring


def given(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The settings of the table that are set (and not empty)."""
    environ = os.environ if environ is None else environ
    return {s.name: environ[s.name].strip() for s in SETTINGS if environ.get(s.name, "").strip()}


def refuse_foreign(cloud: str, environ: Mapping[str, str] | None = None) -> None:
    """A setting this target cannot honour is one error line."""
    for name in given(environ):
        setting = BY_NAME[name]
        if cloud not in setting.targets:
            where = " and ".join(f"CLOUD={t}" for t in setting.targets)
            raise UserError(
                f"{name} does not apply to CLOUD={cloud} (it is for {where}: "
                f"{setting.meaning}); unset it"
            )


def inventory_variables(cloud: str, environ: Mapping[str, str] | None = None) -> dict[str, object]:
    """The inventory variables the stack settings give on this target."""
    refuse_foreign(cloud, environ)
    values = given(environ)
    variables: dict[str, object] = {
        BY_NAME[name].variable: value for name, value in values.items() if BY_NAME[name].variable
    }
    if "SSH_ALLOWED_CIDR" in values:
        anywhere = flag("ALLOW_SSH_FROM_ANYWHERE", environ)
        variables["stack_ssh_allowed_cidrs"] = [ssh_cidr(values["SSH_ALLOWED_CIDR"], anywhere)]
    if "stack_s3_endpoint_url" in variables and "stack_object_store" not in variables:
        variables["stack_object_store"] = "external"
    if "MINIO_DOWNLOAD_URL" in values and "stack_object_store" not in variables:
        variables["stack_object_store"] = "minio"  # refused by site.yml with what to do instead
    return variables


def ssh_cidr(text: str, anywhere: bool = False) -> str:
    """SSH_ALLOWED_CIDR checked: IPv4 (the floating IPs and rules are), and not the whole
    Internet unless the user says so."""
    try:
        network = ipaddress.IPv4Network(text, strict=False)
    except ValueError:
        raise UserError(
            f"SSH_ALLOWED_CIDR={text} is not an IPv4 CIDR such as 203.0.113.7/32"
        ) from None
    if network.prefixlen == 0 and not anywhere:
        raise UserError(
            f"SSH_ALLOWED_CIDR={text} opens SSH to the whole Internet; narrow it, or say so "
            "with ALLOW_SSH_FROM_ANYWHERE=1"
        )
    return str(network)


def health_timeout(environ: Mapping[str, str] | None = None) -> int:
    text = given(environ).get("HEALTH_TIMEOUT", "")
    if not text:
        return DEFAULT_HEALTH_TIMEOUT
    if not text.isdigit() or int(text) > 3600:
        raise UserError(f"HEALTH_TIMEOUT={text} is not seconds; use a whole number 0 to 3600")
    return int(text)
