"""The make variables of `CLOUD=chameleon`, read and checked before anything is contacted:
SITE, GPU_FLAVOR (KVM) or NODE_TYPE (bare metal), GPU_NODES, LEASE_HOURS, SSH_ALLOWED_CIDR
(required here; with ALLOW_SSH_FROM_ANYWHERE=1 for 0.0.0.0/0), HOURS (extend), LEASE_TIMEOUT
and SSH_TIMEOUT (seconds). stack/settings.py lists every `make up` setting and its targets."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime

from core.errors import UserError
from core.flags import flag
from stack import settings as stack_settings
from stack.chameleon import sites

DEFAULT_GPU_NODES = 1
DEFAULT_LEASE_HOURS = 8  # a working day; `make extend` adds more
DEFAULT_EXTEND_HOURS = 24
DEFAULT_LEASE_TIMEOUT = 900  # seconds for a lease to go ACTIVE
DEFAULT_SSH_TIMEOUT = 1200  # bare metal boots in 7 to 10 minutes


@dataclass(frozen=True)
class Settings:
    site: sites.Site
    gpu_hardware: str
    gpu_count: int
    lease_hours: int
    ssh_allowed_cidr: str
    allow_ssh_from_anywhere: bool
    lease_timeout: float
    ssh_timeout: float
    start: datetime | None = None  # an advance reservation (UTC); None = now


def _env(name: str) -> str:
    return os.environ.get(name, "").strip()


def _int(name: str, default: int, low: int, high: int, meaning: str) -> int:
    text = _env(name)
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise UserError(f"{name}={text} is not {meaning}; use a whole number {low} to {high}")
    return value


def site(recorded: str | None = None) -> sites.Site:
    """SITE=, else the site the stack was made at, else KVM@TACC."""
    name = _env("SITE") or recorded or sites.DEFAULT_SITE
    if recorded and name != recorded:
        raise UserError(
            f"this stack lives at {recorded}, not SITE={name}: `make down` it first, or pick "
            "another STACK_NAME="
        )
    return sites.site(name)


def for_up(recorded_site: str | None = None) -> Settings:
    where = site(recorded_site)
    hardware = sites.gpu_hardware(where, _env("GPU_FLAVOR"), _env("NODE_TYPE"))
    gpus = _int("GPU_NODES", DEFAULT_GPU_NODES, 1, 64, "a number of GPU nodes")
    hours = _int(
        "LEASE_HOURS",
        DEFAULT_LEASE_HOURS,
        1,
        where.max_lease_hours,
        f"a lease length at {where.name}",
    )
    anywhere = flag("ALLOW_SSH_FROM_ANYWHERE")
    cidr = ssh_cidr(anywhere)
    return Settings(
        site=where,
        gpu_hardware=hardware,
        gpu_count=gpus,
        lease_hours=hours,
        ssh_allowed_cidr=cidr,
        allow_ssh_from_anywhere=anywhere,
        lease_timeout=_int("LEASE_TIMEOUT", DEFAULT_LEASE_TIMEOUT, 1, 86400, "seconds"),
        ssh_timeout=_int("SSH_TIMEOUT", DEFAULT_SSH_TIMEOUT, 0, 86400, "seconds"),
        start=start_time(where),
    )


def ssh_cidr(anywhere: bool) -> str:
    text = _env("SSH_ALLOWED_CIDR")
    if not text:
        raise UserError(
            "set SSH_ALLOWED_CIDR=<your public address>/32 (or your network's CIDR): the only "
            "addresses allowed to SSH to the stack's floating IP"
        )
    return stack_settings.ssh_cidr(text, anywhere)


def start_time(site: sites.Site, now: datetime | None = None) -> datetime | None:
    """START= (UTC, `2026-12-24 09:00` or `2026-12-24T09:00`): when the lease starts, for
    hardware that is taken now; unset = now."""
    text = _env("START")
    if not text:
        return None
    try:
        start = datetime.strptime(text.replace("T", " "), "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
    except ValueError:
        raise UserError(
            f"START={text} is not a time; give it in UTC as YYYY-MM-DD HH:MM "
            "(e.g. START='2026-12-24 09:00')"
        ) from None
    now = now or datetime.now(UTC)
    if start <= now:
        raise UserError(
            f"START={text} is in the past (it is {now:%Y-%m-%d %H:%M} UTC); give a later time, "
            "or leave START unset to start now"
        )
    window = sites.ADVANCE_WINDOW_HOURS
    if window is not None and (start - now).total_seconds() > window * 3600:
        raise UserError(f"START={text} is more than {window} h ahead, beyond {site.name}'s window")
    return start


def extend_hours(site: sites.Site) -> int:
    return _int("HOURS", DEFAULT_EXTEND_HOURS, 1, site.max_lease_hours, "a number of hours")
