"""What a stack's lease asks Blazar for, and what it keeps of Blazar's answer.

Blazar's answer is read as Blazar writes it, not as it was asked (ChameleonCloud/blazar
@5204b41a blazar/plugins/flavor/flavor_plugin.py `reserve_resource`: a flavor reservation's
`flavor_id` becomes the reserved flavor's id, the requested flavor survives as JSON in its
`resource_properties`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from stack.chameleon import sites
from stack.chameleon.sites import Site

# Blazar's start_date/end_date format (oslo.serialization's PERFECT_TIME_FORMAT).
BLAZAR_DATE = "%Y-%m-%dT%H:%M:%S.%f"
# ChameleonCloud/blazar@bbd20e84 blazar/status.py LeaseStatus.
REUSABLE = ("PENDING", "CREATING", "STARTING", "ACTIVE", "UPDATING")
GOING = ("TERMINATING", "DELETING")


@dataclass(frozen=True)
class LeaseRequest:
    name: str
    site: Site
    gpu_hardware: str  # the GPU flavor (KVM) or node type (bare metal)
    gpu_count: int
    hours: int
    start: datetime | None = None  # an advance reservation (UTC); None = now

    def reservations(self) -> list[dict]:
        """The reservations as python-chi sends them (flavor ids are looked up at submit)."""
        if self.site.kind == "kvm":
            gpu = {"resource_type": "flavor:instance", "flavor": self.gpu_hardware}
            services = {"resource_type": "flavor:instance", "flavor": self.site.services}
            gpu["amount"], services["amount"] = self.gpu_count, 1
        else:
            gpu = _node_reservation(self.gpu_hardware, self.gpu_count)
            services = _node_reservation(self.site.services, 1)
        if not self.site.reserves_floating_ip:
            return [gpu, services]
        fip = {"resource_type": "virtual:floatingip", "network": sites.PUBLIC_NETWORK, "amount": 1}
        return [gpu, services, fip]

    def node_hours(self) -> int:
        return (self.gpu_count + 1) * self.hours


def _node_reservation(node_type: str, count: int) -> dict:
    return {
        "resource_type": "physical:host",
        "resource_properties": json.dumps(["==", "$node_type", node_type]),
        "min": count,
        "max": count,
    }


@dataclass(frozen=True)
class Lease:
    """What the stack needs out of a lease: ids of the reservations inside it (never the
    lease id) and the reserved floating IP (bare metal)."""

    id: str
    name: str
    status: str
    start: datetime
    end: datetime
    gpu_reservation_id: str
    services_reservation_id: str
    fip_reservation_id: str = ""
    floating_ip: str = ""
    gpu_count: int = 0

    def hours_left(self, now: datetime | None = None) -> float:
        return (self.end - (now or datetime.now(UTC))).total_seconds() / 3600

    def node_hours(self, now: datetime | None = None) -> tuple[float, float]:
        """Node-hours charged so far and in all: every host, from start to end, used or not."""
        now = now or datetime.now(UTC)
        nodes = self.gpu_count + 1
        total = (self.end - self.start).total_seconds() / 3600
        used = min(max((now - self.start).total_seconds() / 3600, 0), total)
        return nodes * used, nodes * total


def parse_date(text: str) -> datetime:
    return datetime.strptime(text, BLAZAR_DATE).replace(tzinfo=UTC)


def made_for(reservation: dict, site: Site) -> str:
    """The flavor name or node type a reservation was requested for, as Blazar keeps it."""
    try:
        properties = json.loads(reservation.get("resource_properties") or "null")
    except (TypeError, ValueError):
        return ""
    if site.kind == "kvm":
        return properties.get("name", "") if isinstance(properties, dict) else ""
    if isinstance(properties, list) and len(properties) == 3:
        return str(properties[2])  # ["==", "$node_type", "<type>"]
    return ""
