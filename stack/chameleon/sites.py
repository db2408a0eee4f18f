"""Each Chameleon site's facts, in one place. Source of every fact: Chameleon's documentation
(ChameleonCloud/docs, `source/technical/`) and python-chi 1.2.10; where another source is used
it is named on the line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from core.errors import UserError

# Everywhere (Chameleon's documentation, ChameleonCloud/docs `source/technical/`).
IMAGE = "CC-Ubuntu24.04-CUDA"
SSH_USER = "cc"
# Lease length: `g1.h100.*` at most 7 days; bare metal at most 7 days.
MAX_LEASE_HOURS = 7 * 24


@dataclass(frozen=True)
class Site:
    name: str
    kind: Literal["kvm", "baremetal"]
    # KVM: every flavor needs a `flavor:instance` reservation; bare metal: `physical:host`.
    gpu_flavors: tuple[str, ...] = ()
    gpu_node_types: tuple[str, ...] = ()
    default_gpu: str = ""
    # The services host (PostgreSQL, object store, MLflow, Ray head) needs no GPU.
    services: str = ""
    max_lease_hours: int = MAX_LEASE_HOURS
    # Bare metal: in the last 48 h a lease can be prolonged by up to 7 more days.
    extend_window_hours: int | None = None
    has_volumes: bool = False  # Cinder on KVM; none documented on bare metal

    @property
    def reservation_kind(self) -> str:
        return "flavor:instance" if self.kind == "kvm" else "physical:host"

    @property
    def knob(self) -> str:
        """The make variable that picks the GPU hardware on this site."""
        return "GPU_FLAVOR" if self.kind == "kvm" else "NODE_TYPE"


SITES = {
    "KVM@TACC": Site(
        name="KVM@TACC",
        kind="kvm",
        gpu_flavors=("g1.h100.pci.1", "g1.h100.pci.4"),
        default_gpu="g1.h100.pci.1",
        # m1.xlarge: the CPU flavor the teaching-on-testbeds courses reserve on KVM@TACC for
        # their data and tracking nodes.
        services="m1.xlarge",
        has_volumes=True,
    ),
    "CHI@UC": Site(
        name="CHI@UC",
        kind="baremetal",
        gpu_node_types=(
            "gpu_a100_pcie",
            "gpu_a100_nvlink",
            "gpu_v100",
            "gpu_rtx_6000",
            "compute_gigaio",
        ),
        default_gpu="gpu_a100_pcie",
        # compute_cascadelake_r: the CPU node type of Chameleon's getting-started lease.
        services="compute_cascadelake_r",
        extend_window_hours=48,
    ),
    "CHI@TACC": Site(
        name="CHI@TACC",
        kind="baremetal",
        # gpu_mi100 is AMD (ROCm): CC-Ubuntu24.04-CUDA does not drive it; listed, not default.
        gpu_node_types=("compute_liqid", "gpu_mi100"),
        default_gpu="compute_liqid",
        services="compute_cascadelake_r",
        extend_window_hours=48,
    ),
}
DEFAULT_SITE = "KVM@TACC"


def site(name: str) -> Site:
    if name not in SITES:
        raise UserError(
            f"SITE={name} is not a Chameleon site this stack knows; use one of {', '.join(SITES)}"
        )
    return SITES[name]


def gpu_hardware(site: Site, flavor: str, node_type: str) -> str:
    """The GPU flavor (KVM) or node type (bare metal) asked for, checked against the site."""
    wrong, right = (
        ("NODE_TYPE", "GPU_FLAVOR") if site.kind == "kvm" else ("GPU_FLAVOR", "NODE_TYPE")
    )
    if node_type if site.kind == "kvm" else flavor:
        raise UserError(
            f"{wrong} does not apply on {site.name} ({site.kind}): "
            f"unset it and pick the GPU with {right}= (default {site.default_gpu})"
        )
    chosen = (flavor if site.kind == "kvm" else node_type) or site.default_gpu
    known = site.gpu_flavors if site.kind == "kvm" else site.gpu_node_types
    if chosen not in known:
        raise UserError(
            f"{right}={chosen} is not a GPU {'flavor' if site.kind == 'kvm' else 'node type'} "
            f"of {site.name}; use one of {', '.join(known)}"
        )
    return chosen
