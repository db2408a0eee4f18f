"""When the requested hardware is next free for the requested hours, where Blazar can tell.

Bare metal: Blazar lists its hosts with their node type (GET /v1/os-hosts; extra capabilities
are flattened into each host, ChameleonCloud/blazar@bbd20e84 host_plugin.py `get_computehost`)
and every host's reservations (GET /v1/os-hosts/allocations, `list_allocations`). python-chi's
own `Node.next_free_timeslot` needs Chameleon's fork of python-blazarclient (its
`host.get_allocation`, absent from python-blazarclient 4.6.0), so the same reading is done here
through python-chi's Blazar client.

KVM: python-chi 1.2.10 has no call for a flavor's free capacity (Chameleon's later Blazar serves
one, /v1/flavor-instances/availability, which no client uses), and `chi.hardware.get_nodes`
at KVM@TACC lists CHI@TACC's bare-metal nodes: there it cannot tell."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from stack.chameleon.lease import Leases
from stack.chameleon.reservations import LeaseRequest, parse_date


@dataclass(frozen=True)
class Slot:
    start: datetime | None  # None: Blazar cannot tell (KVM)
    free_nodes: int  # reservable nodes of the type
    why: str = ""  # when it cannot tell


def next_free(leases: Leases, request: LeaseRequest, now: datetime | None = None) -> Slot:
    now = now or datetime.now(UTC)
    if leases.site.kind == "kvm":
        return Slot(None, 0, "python-chi cannot tell when a KVM flavor is next free")
    with leases._chi() as chi:
        blazar = chi.blazar()
        hosts = [
            h
            for h in blazar.host.list()
            if h.get("node_type") == request.gpu_hardware and _reservable(h)
        ]
        allocations = {
            a["resource_id"]: a["reservations"] for a in blazar.allocation.list("os-hosts")
        }
    busy = {
        h["id"]: [
            (parse_date(r["start_date"]), parse_date(r["end_date"]))
            for r in allocations.get(h["id"], [])
        ]
        for h in hosts
    }
    start = earliest(busy, request.gpu_count, timedelta(hours=request.hours), now)
    return Slot(
        start, len(hosts), "" if start else f"only {len(hosts)} {request.gpu_hardware} node(s) here"
    )


def earliest(
    busy: dict[str, list[tuple[datetime, datetime]]], count: int, length: timedelta, now: datetime
) -> datetime | None:
    """The first time at or after `now` when `count` hosts are all free for `length`; None
    when there are not that many hosts. A window can only open now or as a reservation ends."""
    if len(busy) < count:
        return None
    candidates = sorted({now, *(end for spans in busy.values() for _, end in spans if end > now)})
    for start in candidates:
        stop = start + length
        free = sum(
            1
            for spans in busy.values()
            if all(end <= start or begin >= stop for begin, end in spans)
        )
        if free >= count:
            return start
    return None  # unreachable: after the last end every host is free


def _reservable(host: dict) -> bool:
    value = host.get("reservable", True)
    return value if isinstance(value, bool) else str(value).lower() == "true"
