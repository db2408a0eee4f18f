"""`make up|status|down|extend CLOUD=chameleon`.

up: lease -> terraform apply (the volume's state, then infra's) -> wait for SSH (host keys
pinned) -> inventory -> configure (the same site.yml as every target) -> health (MLflow, Ray
and the object store through an SSH tunnel of the check's own). Each step is recorded
in the stack's record, and every step is safe to run again: a second `make up` after a
failure continues with the same lease, never a second one.
down: back up (a hook the CLI passes) -> terraform destroy infra -> delete the lease ->
list what is left under the stack's name, with the command that removes it.
DRY_RUN=1 on up and down prints the plan and contacts nothing."""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console

from core.errors import UserError
from stack import access as ssh
from stack import probe
from stack.chameleon import credentials, settings, sites
from stack.chameleon import inventory as chameleon_inventory
from stack.chameleon import terraform as tf
from stack.chameleon.lease import Lease, LeaseRequest, Leases
from stack.state import Stack

console = Console(highlight=False, soft_wrap=True)
WARN_HOURS = 2  # `make status` warns when less is left


# --- the stack's record ----------------------------------------------------------------------
def _record(stack: Stack) -> dict:
    return stack.record().get("chameleon") or {}


def _save(stack: Stack, **fields) -> None:
    stack.save_record(chameleon={**_record(stack), **fields}, updated=_now())


def _step_done(stack: Stack, step: str) -> None:
    _save(stack, steps={**_record(stack).get("steps", {}), step: _now()})


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _request(stack: Stack, chosen: settings.Settings) -> LeaseRequest:
    return LeaseRequest(
        name=stack.name,
        site=chosen.site,
        gpu_hardware=chosen.gpu_hardware,
        gpu_count=chosen.gpu_count,
        hours=chosen.lease_hours,
    )


def _request_from_record(stack: Stack) -> LeaseRequest:
    rec = _record(stack)
    return LeaseRequest(
        name=stack.name,
        site=sites.site(rec["site"]),
        gpu_hardware=rec["gpu_hardware"],
        gpu_count=rec["gpu_count"],
        hours=rec.get("lease_hours", settings.DEFAULT_LEASE_HOURS),
    )


def infra_variables(
    stack: Stack,
    chosen: settings.Settings,
    cloud: str,
    lease: Lease | None,
    public_key: str | None,
    volume_id: str | None,
) -> dict:
    """infra/'s variables (its contract); before the lease exists, placeholders say where
    each value will come from."""
    return {
        "stack_name": stack.name,
        "cloud": cloud,
        "site": chosen.site.name,
        "gpu_count": chosen.gpu_count,
        "gpu_reservation_id": lease.gpu_reservation_id if lease else "<from the lease>",
        "services_reservation_id": (lease.services_reservation_id if lease else "<from the lease>"),
        "floating_ip_address": lease.floating_ip if lease else "<reserved by the lease>",
        "image": sites.IMAGE,
        "ssh_allowed_cidr": chosen.ssh_allowed_cidr,
        "allow_ssh_from_anywhere": chosen.allow_ssh_from_anywhere,
        "public_key": public_key or "<generated: secrets/ssh_key.pub>",
        # "" = no volume (infra/ refuses one on bare metal: no Cinder there).
        "data_volume_id": (volume_id or "") if chosen.site.has_volumes else "",
        # Paths for infra/'s own inventory output (STACK_DIR may move them); no secret.
        "ssh_private_key_file": str(stack.folder / "secrets" / "ssh_key"),
        "known_hosts_file": str(stack.folder / "known_hosts"),
    }


def volume_variables(stack: Stack, cloud: str) -> dict:
    """infra/volume/'s variables (it names the volume <stack_name>-data)."""
    return {"stack_name": stack.name, "cloud": cloud}


# --- up ------------------------------------------------------------------------------------
def up(stack: Stack, dry_run: bool, configure: Callable[[Path], None]) -> None:
    rec = _record(stack)
    chosen = settings.for_up(rec.get("site"))
    cloud = credentials.load(chosen.site.name)
    request = _request(stack, chosen)
    if dry_run:
        _print_up_plan(stack, chosen, cloud, request)
        return
    stack.create()
    _save(
        stack,
        site=chosen.site.name,
        cloud=cloud.name,
        gpu_hardware=chosen.gpu_hardware,
        gpu_count=chosen.gpu_count,
        lease_hours=chosen.lease_hours,
    )
    if stack.record().get("state") != "up":
        stack.save_record(state="starting")
    log = stack.log_file("up")

    leases = Leases(cloud, chosen.site)
    console.print(f"lease {request.name!r} at {chosen.site.name}: finding or making it")
    lease, created = leases.ensure(
        request,
        rec.get("lease_id"),
        remember=lambda lease_id: _save(stack, lease_id=lease_id),
        timeout=chosen.lease_timeout,
    )
    if not lease.floating_ip:
        raise UserError(
            f"lease {lease.name!r} is ACTIVE but its reserved floating IP is not listed yet; "
            "`make up` again in a minute"
        )
    # When the lease ends, for whoever plans work on the stack (training checks time left).
    _save(stack, lease_end=lease.end.isoformat())
    _step_done(stack, "lease")
    console.print(
        f"lease {lease.name!r} ({lease.id}) {'made' if created else 'reused'}: ACTIVE until "
        f"{lease.end:%Y-%m-%d %H:%M} UTC, floating IP {lease.floating_ip}"
    )

    env = credentials.terraform_env(cloud)
    modules = tf.modules(stack.folder)
    volume_id = None
    if chosen.site.has_volumes:
        tf.write_tfvars(modules["volume"], volume_variables(stack, cloud.name))
        tf.run(modules["volume"], "apply", env, log)
        volume_id = tf.output(modules["volume"], env).get("volume_id")
        _step_done(stack, "volume")
    public_key = ssh.ensure_key(stack.folder)
    variables = infra_variables(stack, chosen, cloud.name, lease, public_key, volume_id)
    tf.write_tfvars(modules["infra"], variables)
    tf.run(modules["infra"], "apply", env, log)
    outputs = tf.output(modules["infra"], env)
    _step_done(stack, "infra")

    way_in = ssh.Access(stack.folder, outputs.get("ssh_user") or sites.SSH_USER,
                        outputs["gateway_address"])  # fmt: skip
    if _record(stack).get("pinned_for_lease") != lease.id:
        # New lease, new instances, new host keys (and floating IPs are recycled).
        way_in.known_hosts.unlink(missing_ok=True)
        _save(stack, pinned_for_lease=lease.id)
    inventory = chameleon_inventory.render(
        outputs, way_in, stack.folder, volume_id, [chosen.ssh_allowed_cidr]
    )
    workers = inventory["all"]["children"]["ray_workers"]["hosts"]
    console.print(f"waiting for SSH on {way_in.gateway} and {len(workers)} GPU host(s)")
    ssh.wait_for_ssh(way_in, [h["ansible_host"] for h in workers.values()], chosen.ssh_timeout)
    _step_done(stack, "ssh")
    chameleon_inventory.write(stack.inventory, inventory, stack.name)
    _step_done(stack, "inventory")

    configure(stack.inventory)
    ssh.point_clients_at_tunnels(stack.services_endpoints_file, stack.endpoints_file)
    _step_done(stack, "configure")

    (services,) = inventory["all"]["children"]["services"]["hosts"].values()
    checks = probe.check(
        stack.endpoints(), way_in, services["stack_private_address"], chosen.health_timeout
    )
    probe.require_healthy(checks, console, "make up")
    _step_done(stack, "health")
    stack.save_record(state="up")
    console.print(
        f"stack [bold]{stack.name}[/] is up at {chosen.site.name}; lease ends "
        f"{lease.end:%Y-%m-%d %H:%M} UTC ({lease.hours_left():.1f} h left)\n"
        "`make tunnel` opens MLflow, Ray's dashboard and the object store on this machine; "
        "`make status` shows the lease"
    )


def _print_up_plan(
    stack: Stack, chosen: settings.Settings, cloud: credentials.Cloud, request: LeaseRequest
) -> None:
    site = chosen.site
    end = datetime.now(UTC) + timedelta(hours=request.hours)
    lines = [
        "DRY_RUN=1: nothing is contacted, created or written.",
        f"credentials: clouds.yaml entry {cloud.name!r} in {cloud.path} (region {cloud.region})",
        "",
        f"lease request to Blazar at {site.name} ({site.kind}):",
        f"  name {request.name!r}, start now, {request.hours} h "
        f"(ends about {end:%Y-%m-%d %H:%M} UTC; at most {site.max_lease_hours} h here)",
    ]
    roles = (f"GPU nodes ({request.gpu_hardware})", "services node", "gateway floating IP")
    for role, reservation in zip(roles, request.reservations(), strict=True):
        lines.append(f"  {role}: {json.dumps(reservation)}")
    lines.append(
        f"  cost: {request.gpu_count + 1} node(s) x {request.hours} h = "
        f"{request.node_hours()} node-hours of the project's allocation"
    )
    modules = tf.modules(stack.folder)
    lines += ["", f"terraform variables for infra/ (written 0600 to {modules['infra'].tfvars}):"]
    variables = infra_variables(
        stack, chosen, cloud.name, None, None, "<volume_id of infra/volume>"
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
        f"on sharednet1, the reserved floating IP on the services port, key pair {stack.name}-key"
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
    lines.append(f"  ansible-playbook -i {stack.inventory} ansible/site.yml")
    console.print("\n".join(lines), markup=False)


# --- down ----------------------------------------------------------------------------------
def down(stack: Stack, dry_run: bool, purge: bool, backup: Callable[[Stack], None] | None) -> None:
    rec = _record(stack)
    if not stack.exists() and not rec:
        console.print(f"no stack {stack.name!r} here; nothing to take down")
        return
    site = settings.site(rec.get("site"))
    cloud = credentials.load(site.name)
    modules = tf.modules(stack.folder)
    if dry_run:
        lines = ["DRY_RUN=1: nothing is contacted, destroyed or written.", "would run:"]
        if backup and stack.is_up:
            lines.append("  back up MLflow's database and artifacts")
        for cmd in tf.commands(modules["infra"], "destroy"):
            lines.append("  " + shlex.join(cmd))
        lease = rec.get("lease_id") or f"the lease named {stack.name!r}"
        lines.append(f"  delete lease {lease} at {site.name} (Blazar)")
        if purge and site.has_volumes:
            lines += ["  " + shlex.join(c) for c in tf.commands(modules["volume"], "destroy")]
        elif site.has_volumes:
            lines.append(f"  keep the data volume {stack.name}-data (PURGE=1 destroys it)")
        lines.append(
            f"  list instances, ports, floating IPs, volumes, keypairs named {stack.name}*"
        )
        console.print("\n".join(lines), markup=False)
        return
    if backup and stack.is_up:
        backup(stack)
    env = credentials.terraform_env(cloud)
    log = stack.log_file("down")
    if modules["infra"].has_state():
        tf.run(modules["infra"], "destroy", env, log)
    _step_done(stack, "destroyed")
    leases = Leases(cloud, site)
    found = leases.find(stack.name, rec.get("lease_id"))
    if found:
        leases.delete(found["id"])
        console.print(f"lease {found['name']!r} ({found['id']}) deleted")
    _save(stack, lease_id=None, pinned_for_lease=None, lease_end=None)
    if purge and modules["volume"].has_state():
        tf.run(modules["volume"], "destroy", env, log)
    ssh.Access(stack.folder, sites.SSH_USER, "").known_hosts.unlink(missing_ok=True)
    stack.save_record(state="down")
    _report_leftovers(stack, cloud, site, keep_volume=not purge)


def _report_leftovers(
    stack: Stack, cloud: credentials.Cloud, site: sites.Site, keep_volume: bool
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
        noun = {"floating IP": "floating ip", "keypair": "keypair"}.get(kind, kind)
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
            ("floating IP", f["floating_ip_address"], f["id"])
            for f in neutron.list_floatingips()["floatingips"]
            if ours(f.get("description")) or any(ours(t) for t in f.get("tags", []))
        ]
        if site.has_volumes:
            found += [("volume", v.name, v.id) for v in chi.cinder().volumes.list() if ours(v.name)]
    return found


# --- status, extend ------------------------------------------------------------------------
def _current_lease(stack: Stack) -> tuple[Leases, Lease]:
    rec = _record(stack)
    if not rec.get("lease_id"):
        raise UserError(f"stack {stack.name!r} has no lease; `make up CLOUD=chameleon` makes one")
    site = settings.site(rec.get("site"))
    leases = Leases(credentials.load(site.name), site)
    raw = leases.get(rec["lease_id"])
    if raw is None:
        raise UserError(f"the lease of stack {stack.name!r} is gone; `make up` makes a new one")
    return leases, leases.describe(raw, _request_from_record(stack))


def status(stack: Stack) -> None:
    rec = _record(stack)
    if not rec:
        console.print(f"no stack {stack.name!r}: start one with `make up CLOUD=chameleon`")
        return
    record = stack.record()
    console.print(
        f"stack [bold]{stack.name}[/] (CLOUD=chameleon, {rec.get('site')}): "
        f"{record.get('state', 'unknown')} since {record.get('updated', '?')}"
    )
    steps = rec.get("steps", {})
    order = ("lease", "volume", "infra", "ssh", "inventory", "configure", "health")
    done = [step for step in order if step in steps]
    console.print(f"steps done: {', '.join(done) or 'none'}")
    if not rec.get("lease_id"):
        console.print("no lease: `make up` makes one")
        return
    _, lease = _current_lease(stack)
    left = lease.hours_left()
    console.print(
        f"lease {lease.name!r} ({lease.id}): {lease.status}, ends "
        f"{lease.end:%Y-%m-%d %H:%M} UTC, {max(left, 0):.1f} h left"
    )
    if left < WARN_HOURS:
        console.print(
            f"[bold red]warning[/]: under {WARN_HOURS} h left; the lease's end deletes every "
            f"instance: `make extend HOURS={settings.DEFAULT_EXTEND_HOURS}` prolongs it"
        )
    if stack.is_up:
        urls = ", ".join(f"{name} {url}" for name, url in ssh.local_urls().items())
        console.print(f"through `make tunnel`: {urls}")


def extend(stack: Stack) -> None:
    leases, lease = _current_lease(stack)
    hours = settings.extend_hours(leases.site)
    new_end = leases.extend(lease, hours)
    _save(stack, lease_end=new_end.isoformat())
    console.print(
        f"lease {lease.name!r} extended by {hours} h: ends {new_end:%Y-%m-%d %H:%M} UTC "
        f"(was {lease.end:%Y-%m-%d %H:%M} UTC)"
    )
