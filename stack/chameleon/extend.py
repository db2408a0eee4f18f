"""`make extend`: prolong the stack's lease within the site's rules (bare metal: only in its last
48 h; KVM: at most 7 days in all), and the refusal of Blazar's flavor plugin, which cannot
change a KVM lease's dates, turned into what to do instead."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from core.errors import UserError
from stack.chameleon.lease import Leases, message
from stack.chameleon.reservations import Lease, parse_date

# ChameleonCloud/blazar@5204b41a blazar/plugins/flavor/flavor_plugin.py `update_reservation`
# (409 through blazar/manager/exceptions NotImplemented); Blazar's update_lease then leaves the
# lease in ERROR, its instances running until its end. (@0280aeb0 moves the dates instead.)
FLAVOR_UPDATE_REFUSED = "Flavor-based reservation update not yet supported"


def extend(leases: Leases, lease: Lease, hours: int, now: datetime | None = None) -> datetime:
    """Prolong by `hours` within the site's rules; returns the new end."""
    from blazarclient.exception import BlazarClientException

    now = now or datetime.now(UTC)
    new_end = lease.end + timedelta(hours=hours)
    window = leases.site.extend_window_hours
    if window is not None and lease.hours_left(now) > window:
        raise UserError(
            f"{leases.site.name} prolongs a lease only in its last {window} h; "
            f"{lease.name!r} ends {lease.end:%Y-%m-%d %H:%M} UTC, "
            f"{lease.hours_left(now):.0f} h from now: run `make extend` after "
            f"{lease.end - timedelta(hours=window):%Y-%m-%d %H:%M} UTC"
        )
    if window is None and new_end - lease.start > timedelta(hours=leases.site.max_lease_hours):
        longest = lease.start + timedelta(hours=leases.site.max_lease_hours)
        most = max(0, int((longest - lease.end).total_seconds() // 3600))
        raise UserError(
            f"{leases.site.name} leases last at most {leases.site.max_lease_hours} h; "
            f"{lease.name!r} can end by {longest:%Y-%m-%d %H:%M} UTC at the latest: "
            f"HOURS={most} at most"
        )
    if window is not None and hours > leases.site.max_lease_hours:
        raise UserError(
            f"{leases.site.name} prolongs by up to {leases.site.max_lease_hours} h at a time"
        )
    with leases._chi() as chi:
        try:
            updated = chi.blazar().lease.update(lease.id, prolong_for=f"{hours}h")
        except BlazarClientException as err:
            if FLAVOR_UPDATE_REFUSED in message(err):
                raise FlavorExtendRefused(lease) from None
            raise UserError(
                f"Blazar refused to extend lease {lease.name!r} by {hours} h: "
                f"{message(err)}; it still ends {lease.end:%Y-%m-%d %H:%M} UTC"
            ) from None
    return parse_date(updated["end_date"])


class FlavorExtendRefused(UserError):
    """Blazar's flavor plugin refuses to change a KVM lease's dates; the lease then reads
    ERROR, and its instances run until its end."""

    def __init__(self, lease: Lease) -> None:
        super().__init__(
            f'Blazar at KVM@TACC does not prolong flavor reservations ("{FLAVOR_UPDATE_REFUSED}'
            f'"); lease {lease.name!r} still ends {lease.end:%Y-%m-%d %H:%M} UTC (Blazar now '
            "lists it as ERROR; its instances keep running until then). To go on past it: let "
            "the run save its checkpoint before the end (it does so 30 minutes before), "
            "`make down`, then `make up` for a new lease and `make train RESUME=1`"
        )
