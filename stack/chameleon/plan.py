"""What `make up` and `make down` would do on Chameleon (DRY_RUN=1: nothing is contacted), and
what is still there under the stack's name after `make down`, with the command that removes
each."""

from __future__ import annotations

import json
import shlex
from datetime import UTC, datetime, timedelta

from rich.console import Console

from stack.chameleon import availability, credentials, settings, sites
from stack.chameleon import terraform as tf
from stack.chameleon.reservations import Lease, LeaseRequest
from stack.state import Stack


def up_lines(
    stack: Stack,
    chosen: settings.Settings,
    cloud: credentials.Cloud,
    request: LeaseRequest,
    slot: availability.Slot,
) -> list[str]:
    site = chosen.site
    start = request.start or datetime.now(UTC)
    end = start + timedelta(hours=request.hours)
    when = f"start {start:%Y-%m-%d %H:%M} UTC" if request.start else "start now"
    lines = [
        "(Blazar is asked, read-only, when the hardware is free)"
        if site.kind != "kvm"
        else "(nothing is contacted)",
        f"credentials: clouds.yaml entry {cloud.name!r} in {cloud.path} (region {cloud.region})",
        "",
        f"lease request to Blazar at {site.name} ({site.kind}):",
        f"  name {request.name!r}, {when}, {request.hours} h "
        f"(ends about {end:%Y-%m-%d %H:%M} UTC; at most {site.max_lease_hours} h here)",
    ]
    roles = (f"GPU nodes ({request.gpu_hardware})", "services node", "gateway floating IP")
    for role, reservation in zip(roles, request.reservations(), strict=False):
        lines.append(f"  {role}: {json.dumps(reservation)}")
    if not site.reserves_floating_ip:
        lines.append(f"  gateway floating IP: allocated from {sites.PUBLIC_NETWORK!r} by Terraform "
                     "at `make up`, released at `make down` (no reservation on KVM)")  # fmt: skip
    lines += _free_lines(request, slot)
    lines += [f"  {line}" for line in _charge(site, request.gpu_hardware, request.gpu_count,
                                                 request.hours)]  # fmt: skip
    modules = tf.modules(stack.folder)
    lines += ["", f"terraform variables for infra/ (written 0600 to {modules['infra'].tfvars}):"]
    variables = tf.infra_variables(
        stack.name, chosen, cloud.name, None, None, "<volume_id of infra/volume>"
    )
    lines += ["  " + line for line in json.dumps(variables, indent=2).splitlines()]
    lines += ["", "would create:"]
    if site.has_volumes:
        lines.append(f"  infra/volume: the data volume {stack.name}-data (kept by `make down`)")
    else:
        lines.append(f"  no data volume ({site.name} has no Cinder): durable data is backed up")
    workers = f"{request.gpu_count} GPU instance(s)"
    how = "the reserved flavor" if site.kind == "kvm" else "the reservation's scheduler hint"
    lines.append(
        f"  infra: 1 services instance and {workers} from {sites.IMAGE} ({how}), their ports "
        f"on {sites.SHARED_NETWORK}, the floating IP on the services port, key pair "
        f"{stack.name}-key"
    )
    if site.kind == "kvm":
        lines.append(
            f"  security group: SSH from {chosen.ssh_allowed_cidr}, all traffic between the "
            "stack's own ports, nothing else"
        )
    else:
        lines.append(
            "  no security groups on bare metal: the host firewall (nftables) is the only wall"
        )
    lines += ["", "commands:"]
    lines.append(f"  python-chi: Lease({request.name!r}).submit(), then wait until ACTIVE")
    names = ("volume", "infra") if site.has_volumes else ("infra",)
    for name in names:
        for cmd in tf.commands(modules[name], "apply"):
            lines.append("  " + shlex.join(cmd))
    lines.append("  " + shlex.join(tf.commands(modules["infra"], "output")[0]))
    lines.append(f"  ssh {sites.SSH_USER}@<floating IP> true (pins host keys), then each host")
    return lines


def _free_lines(request: LeaseRequest, slot: availability.Slot) -> list[str]:
    if slot.start is None:
        return [f"  when free: {slot.why}"]
    wanted = request.start or datetime.now(UTC)
    if slot.start <= wanted + timedelta(minutes=1):
        return [f"  when free: {request.gpu_count} of {slot.free_nodes} {request.gpu_hardware} "
                f"node(s) are free then for {request.hours} h"]  # fmt: skip
    return [
        f"  when free: {request.gpu_count} {request.gpu_hardware} node(s) are next free for "
        f"{request.hours} h from {slot.start:%Y-%m-%d %H:%M} UTC; take that slot with "
        f"START='{slot.start:%Y-%m-%d %H:%M}'"
    ]


def _charge(site: sites.Site, hardware: str, gpus: int, hours: float) -> list[str]:
    """What a lease of `hours` costs: node-hours, and Service Units where Chameleon documents
    the rate (sites.py)."""
    lines = [f"cost: {gpus + 1} node(s) x {hours:g} h = {(gpus + 1) * hours:g} node-hours"]
    rates = {hardware: site.gpu_su_per_hour, site.services: site.services_su_per_hour}
    known = {name: rate for name, rate in rates.items() if rate is not None}
    if known:
        parts = [f"{name} {rate:g} SU/h" for name, rate in known.items()]
        lines.append(f"Service Units where documented: {', '.join(parts)}")
    missing = [name for name, rate in rates.items() if rate is None]
    if missing:
        lines.append(
            f"the SU rate of {', '.join(missing)} is not in Chameleon's documentation "
            f"(see {sites.SU_FAQ})"
        )
    return lines


def cost_lines(
    lease: Lease, site: sites.Site, hardware: str, now: datetime, deleted: bool = False
) -> list[str]:
    """A lease's charge so far and in all (every host, from its start to its end or deletion,
    used or not)."""
    used, total = lease.node_hours(now)
    if deleted:
        total = used
    nodes = lease.gpu_count + 1
    lines = [f"cost: {used:.1f} node-hours so far, {total:.1f} in all ({nodes} node(s))"]
    rates = {hardware: site.gpu_su_per_hour, site.services: site.services_su_per_hour}
    if all(rate is not None for rate in rates.values()):
        per_hour = (site.gpu_su_per_hour or 0) * lease.gpu_count + (site.services_su_per_hour or 0)
        lines.append(
            f"  {per_hour * used / nodes:.1f} SU so far, {per_hour * total / nodes:.1f} in all"
        )
    else:
        missing = ", ".join(name for name, rate in rates.items() if rate is None)
        lines.append(
            f"  SUs: the rate of {missing} is not in Chameleon's documentation ({sites.SU_FAQ})"
        )
    return lines


def down_lines(stack: Stack, site: sites.Site, purge: bool) -> list[str]:
    modules = tf.modules(stack.folder)
    lines = ["  " + shlex.join(cmd) for cmd in tf.commands(modules["infra"], "destroy")]
    lease = stack.record.lease.id or f"the lease named {stack.name!r}"
    lines.append(f"  delete lease {lease} at {site.name} (Blazar)")
    if purge and site.has_volumes:
        lines += ["  " + shlex.join(c) for c in tf.commands(modules["volume"], "destroy")]
    elif site.has_volumes:
        lines.append(f"  keep the data volume {stack.name}-data (PURGE=1 destroys it)")
    lines.append(f"  list instances, ports, floating IPs, volumes, keypairs named {stack.name}*")
    return lines


def report_leftovers(
    console: Console,
    stack: Stack,
    cloud: credentials.Cloud,
    site: sites.Site,
    keep_volume: bool,
) -> None:
    left = leftovers(cloud, site, stack.name)
    volume = f"{stack.name}-data"
    kept = [item for item in left if keep_volume and item[0] == "volume" and item[1] == volume]
    rest = [item for item in left if item not in kept]
    for _, name, _ in kept:
        console.print(f"kept: volume {name} with the stack's data (`make down PURGE=1` deletes it)")
    if not rest:
        console.print(f"stack [bold]{stack.name}[/] is down: nothing else is left at {site.name}")
        return
    console.print(f"still at {site.name} under the name {stack.name} (remove by hand):")
    for kind, name, ident in rest:
        noun = {"floating IP": "floating ip", "security group": "security group"}.get(kind, kind)
        target = name if kind == "keypair" else ident
        console.print(
            f"  {kind} {name} ({ident}): openstack --os-cloud {cloud.name} {noun} delete {target}",
            markup=False,
        )


def leftovers(cloud: credentials.Cloud, site: sites.Site, name: str) -> list[tuple[str, str, str]]:
    """What is still there under the stack's name: (kind, name, id)."""
    found: list[tuple[str, str, str]] = []

    def ours(text: str | None) -> bool:
        return bool(text) and (text == name or text.startswith(f"{name}-"))

    with credentials.python_chi(cloud) as chi:
        found += [("server", s.name, s.id) for s in chi.nova().servers.list() if ours(s.name)]
        found += [("keypair", k.name, k.name) for k in chi.nova().keypairs.list() if ours(k.name)]
        neutron = chi.neutron()
        found += [
            ("port", p["name"], p["id"]) for p in neutron.list_ports()["ports"] if ours(p["name"])
        ]
        found += [
            ("security group", g["name"], g["id"])
            for g in neutron.list_security_groups()["security_groups"]
            if ours(g["name"])
        ]
        found += [
            ("floating IP", f["floating_ip_address"], f["id"])
            for f in neutron.list_floatingips()["floatingips"]
            if ours(f.get("description")) or any(ours(t) for t in f.get("tags", []))
        ]
        if site.has_volumes:
            found += [("volume", v.name, v.id) for v in chi.cinder().volumes.list() if ours(v.name)]
    return found
