"""Every Chameleon fact the stack builds on, in one place, each with its source. `docs@50021b6d`
is ChameleonCloud/docs at commit 50021b6df897d350e32cc3b9d57e1de2a3c837fa (2026-07-01);
`blazar@5204b41a` / `@0280aeb0` / `@bbd20e84` are ChameleonCloud/blazar commits; python-chi is
1.2.10 (ChameleonCloud/python-chi@f691d6ad). Where Chameleon documents nothing, the fact says
so instead of guessing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from core.errors import UserError

# The images (docs@50021b6d source/technical/images/index.rst: CC-Ubuntu24.04-CUDA on KVM@TACC,
# CHI@TACC and CHI@UC) log in as `cc` (source/getting-started/index.rst: `ssh ... cc@<ip>`).
IMAGE = "CC-Ubuntu24.04-CUDA"
SSH_USER = "cc"
# The network every project's ports share (docs@50021b6d source/getting-started/index.rst), and
# the floating-IP pool (python-chi chi/lease.py PUBLIC_NETWORK = "public").
SHARED_NETWORK = "sharednet1"
PUBLIC_NETWORK = "public"
# "resource reservations (leases) are limited to a duration of 7 days. However, an active lease
# within 48 hours of its end time can be prolonged by up to 7 days from the moment of request
# if resources are available"; KVM@TACC GPU flavors (g1.h100.*) have "the same 7-day cap"
# (docs@50021b6d source/technical/reservations/gui_reservations.rst, `lease-policy`).
MAX_LEASE_HOURS = 7 * 24
EXTEND_WINDOW_HOURS = 48
# "One Service Unit (SU) is equivalent to one hour of wall clock time on a base bare metal
# server" (docs@50021b6d source/user/project.rst). The rates of GPU node types and KVM flavors
# are not in the documentation: it defers to this FAQ.
SU_FAQ = (
    "https://www.chameleoncloud.org/learn/frequently-asked-questions/"
    "#toc-what-are-the-units-of-an-allocation-and-how-am-i-charged-"
)
BASE_BARE_METAL_SU_PER_HOUR = 1.0
# How far ahead a lease may start: Chameleon documents advance reservations
# (docs@50021b6d source/getting-started/index.rst) but no limit; Blazar's refusal, if any, is
# reported as it comes.
ADVANCE_WINDOW_HOURS: int | None = None


@dataclass(frozen=True)
class Site:
    name: str
    kind: Literal["kvm", "baremetal"]
    # KVM: every flavor needs a `flavor:instance` reservation; bare metal: `physical:host`
    # (docs@50021b6d source/technical/reservations/cli_reservations.rst).
    gpu_flavors: tuple[str, ...] = ()
    gpu_node_types: tuple[str, ...] = ()
    default_gpu: str = ""
    # The services host (PostgreSQL, object store, MLflow, Ray head) needs no GPU.
    services: str = ""
    max_lease_hours: int = MAX_LEASE_HOURS
    # Bare metal: in the last 48 h a lease can be prolonged by up to 7 more days. KVM: Blazar's
    # flavor plugin decides (blazar@5204b41a refuses every update of a flavor reservation,
    # blazar@0280aeb0 allows new dates): `make extend` tries and reports a refusal.
    extend_window_hours: int | None = None
    has_volumes: bool = False  # Cinder on KVM; none documented on bare metal
    # Where the gateway's floating IP comes from. Bare metal: a `virtual:floatingip`
    # reservation in the lease, created and deleted by Blazar (blazar@bbd20e84
    # floatingip_plugin.py). KVM@TACC: the documentation only allocates one from `public` and
    # associates it (docs@50021b6d source/technical/kvm/kvm_gui.rst, "Associating a floating IP
    # address"); no page offers floating-IP reservations there, so the stack allocates one at
    # `make up` and releases it at `make down`.
    reserves_floating_ip: bool = True
    # Service Units per node-hour of the GPU hardware and of the services node, where the
    # documentation gives them (None: it does not; see SU_FAQ).
    gpu_su_per_hour: float | None = None
    services_su_per_hour: float | None = None

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
        # g1.h100.pci.1 (1x H100: docs@50021b6d source/technical/reservations/
        # cli_reservations.rst's flavor list) and g1.h100.pci.4 (4x H100 on one host, whose
        # hardware kvm_hardware.rst describes; the name is the site's flavor list's, not the
        # documentation's).
        gpu_flavors=("g1.h100.pci.1", "g1.h100.pci.4"),
        default_gpu="g1.h100.pci.1",
        # m1.xlarge: the CPU flavor the teaching-on-testbeds courses reserve on KVM@TACC for
        # their data and tracking nodes (teaching-on-testbeds/gourmetgram-iac).
        services="m1.xlarge",
        has_volumes=True,
        reserves_floating_ip=False,
    ),
    "CHI@UC": Site(
        name="CHI@UC",
        kind="baremetal",
        # GPU node types: gpu_a100_pcie (docs@50021b6d source/technical/discovery/
        # hardware_catalog.rst), compute_gigaio (baremetal/composable_hardware.rst),
        # gpu_rtx_6000 (reservations/cli_reservations.rst); gpu_a100_nvlink and gpu_v100 from
        # CHI@UC's hardware catalog (not in the documentation's text).
        gpu_node_types=(
            "gpu_a100_pcie",
            "gpu_a100_nvlink",
            "gpu_v100",
            "gpu_rtx_6000",
            "compute_gigaio",
        ),
        default_gpu="gpu_a100_pcie",
        # compute_cascadelake_r: the CPU node type of Chameleon's getting-started lease, a
        # base bare metal server (1 SU per hour, source/user/project.rst).
        services="compute_cascadelake_r",
        extend_window_hours=EXTEND_WINDOW_HOURS,
        services_su_per_hour=BASE_BARE_METAL_SU_PER_HOUR,
    ),
    "CHI@TACC": Site(
        name="CHI@TACC",
        kind="baremetal",
        # compute_liqid: A100s composed onto a node (baremetal/composable_hardware.rst).
        # gpu_mi100 is AMD (ROCm): CC-Ubuntu24.04-CUDA does not drive it; listed, not default.
        gpu_node_types=("compute_liqid", "gpu_mi100"),
        default_gpu="compute_liqid",
        services="compute_cascadelake_r",
        extend_window_hours=EXTEND_WINDOW_HOURS,
        services_su_per_hour=BASE_BARE_METAL_SU_PER_HOUR,
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
