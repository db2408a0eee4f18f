"""Terraform for a stack: the modules in `infra/` (compute, network) and `infra/volume/` (the
data volume, in a state of its own so `make down` keeps it), each with its state, plugin folder
and tfvars in the stack's state folder. The tfvars hold no secret: Terraform reads the
credential from clouds.yaml itself (`cloud =`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from core.errors import UserError
from core.paths import REPO_ROOT
from stack.inventory import Host

INFRA = REPO_ROOT / "infra"
console = Console(stderr=True, highlight=False)


@dataclass(frozen=True)
class Module:
    """One root module and where its state lives for one stack."""

    name: str  # "volume" or "infra"
    source: Path
    folder: Path  # .stack/<name>/terraform/<module>/

    @property
    def state(self) -> Path:
        return self.folder / "terraform.tfstate"

    @property
    def tfvars(self) -> Path:
        return self.folder / "terraform.tfvars.json"

    def has_state(self) -> bool:
        if not self.state.is_file():
            return False
        return bool(json.loads(self.state.read_text() or "{}").get("resources"))


def modules(stack_folder: Path) -> dict[str, Module]:
    base = stack_folder / "terraform"
    return {
        "volume": Module("volume", INFRA / "volume", base / "volume"),
        "infra": Module("infra", INFRA, base / "infra"),
    }


def binary() -> str:
    """`terraform` on PATH (TERRAFORM= picks another, e.g. OpenTofu's `tofu`)."""
    name = os.environ.get("TERRAFORM") or "terraform"
    found = shutil.which(name)
    if not found:
        raise UserError(f"no {name} on PATH: install Terraform >= 1.6 (or set TERRAFORM=tofu)")
    return found


def commands(module: Module, action: str, reservations_active: bool = True) -> list[list[str]]:
    """The commands `make up` (action "apply") or `make down` ("destroy") runs, as a user
    could type them. A destroy once the lease is over reads nothing the lease's end deleted
    (its instances, reserved flavor and floating IP): Terraform's data sources would fail on
    them ("Your query returned no results", terraform-provider-openstack v3.4.0
    data_source_openstack_compute_flavor_v2.go), so it refreshes nothing and tells infra/ the
    lease is no longer active."""
    chdir = f"-chdir={module.source}"
    state = f"-state={module.state}"
    init = ["terraform", chdir, "init", "-input=false"]
    if action == "output":
        return [["terraform", chdir, "output", "-json", state]]
    run = ["terraform", chdir, action, "-input=false", "-auto-approve"]
    if not reservations_active:
        run += ["-refresh=false", "-var=reservations_active=false"]
    return [init, [*run, state, f"-var-file={module.tfvars}"]]


def write_tfvars(module: Module, variables: dict) -> None:
    """The module's variables as JSON, 0600 from the first byte, replaced atomically."""
    module.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = module.tfvars.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(variables, out, indent=2)
        out.write("\n")
    tmp.replace(module.tfvars)


def destroy(
    module: Module, env: dict[str, str], log: Path, reservations_active: bool = True
) -> None:
    run(module, "destroy", env, log, reservations_active)


def run(
    module: Module, action: str, env: dict[str, str], log: Path, reservations_active: bool = True
) -> None:
    """init, then apply or destroy; full output to the log, one line on failure."""
    exe = binary()
    # Plugins and modules per stack: the module folder stays clean and shared.
    env = {**env, "TF_DATA_DIR": str(module.folder / ".terraform"), "TF_IN_AUTOMATION": "1"}
    with log.open("a") as out, console.status(f"terraform {action} {module.name}") as status:
        os.chmod(log, 0o600)
        for cmd in commands(module, action, reservations_active):
            status.update(f"terraform {' '.join(cmd[2:4])} ({module.name})")
            out.write(f"$ {' '.join(cmd)}\n")
            out.flush()
            proc = subprocess.run(
                [exe, *cmd[1:]], stdout=out, stderr=subprocess.STDOUT, env=env, check=False
            )
            if proc.returncode != 0:
                again = "make up" if action == "apply" else "make down"
                raise UserError(
                    f"terraform {cmd[2]} of {module.name} failed (exit {proc.returncode}); "
                    f"its output is in {log}; `{again}` again continues from here"
                )


def output(module: Module, env: dict[str, str]) -> dict:
    """`terraform output -json`, as {name: value}."""
    env = {**env, "TF_DATA_DIR": str(module.folder / ".terraform")}
    cmd = commands(module, "output")[0]
    proc = subprocess.run(
        [binary(), *cmd[1:]], capture_output=True, text=True, env=env, check=False
    )
    if proc.returncode != 0:
        raise UserError(f"terraform output of {module.name} failed: {proc.stderr.strip()[:300]}")
    try:
        return {name: entry["value"] for name, entry in json.loads(proc.stdout or "{}").items()}
    except (ValueError, KeyError, TypeError):
        raise UserError(f"terraform output of {module.name} is not JSON outputs") from None


def infra_variables(
    stack_name: str,
    chosen,
    account: str,
    lease,
    public_key: str | None,
    volume_id: str | None,
) -> dict:
    """infra/'s variables (its contract); before the lease exists, placeholders say where
    each value will come from."""
    from stack.chameleon import sites

    return {
        "stack_name": stack_name,
        "cloud": account,
        "site": chosen.site.name,
        "gpu_count": chosen.gpu_count,
        "gpu_reservation_id": lease.gpu_reservation_id if lease else "<from the lease>",
        "services_reservation_id": (lease.services_reservation_id if lease else "<from the lease>"),
        # Bare metal: the lease's reserved floating IP; KVM: "" (infra/ allocates one).
        "floating_ip_address": (
            (lease.floating_ip if lease else "<reserved by the lease>")
            if chosen.site.reserves_floating_ip
            else ""
        ),
        "image": sites.IMAGE,
        "ssh_allowed_cidr": chosen.ssh_allowed_cidr,
        "allow_ssh_from_anywhere": chosen.allow_ssh_from_anywhere,
        "public_key": public_key or "<generated: secrets/ssh_key.pub>",
        # "" = no volume (infra/ refuses one on bare metal: no Cinder there).
        "data_volume_id": (volume_id or "") if chosen.site.has_volumes else "",
    }


def volume_variables(stack_name: str, account: str) -> dict:
    """infra/volume/'s variables (it names the volume <stack_name>-data)."""
    return {"stack_name": stack_name, "cloud": account}


def hosts(outputs: dict) -> list[Host]:
    """The hosts Terraform made (its `hosts` output), for the inventory."""
    made_here = outputs.get("hosts") or {}
    services = [name for name, h in made_here.items() if h.get("role") == "services"]
    if len(services) != 1:
        raise UserError(
            f"terraform output `hosts` names {len(services)} services host(s), not one; "
            "see infra/outputs.tf"
        )
    (gateway,) = services
    made = [Host(gateway, made_here[gateway]["private_address"], ("services", "ray_head"))]
    made += [
        Host(name, h["private_address"], ("ray_workers",))
        for name, h in sorted(made_here.items())
        if name != gateway
    ]
    return made
