"""The sequence every target shares, written once: `make up`, `status`, `down`, `backup`,
`restore`, `tunnel`, `extend`. The target (stack/targets.py) makes and tears down its hosts and
adds its own part of the status; the lock, the state folder, the inventory, `site.yml`, the
health checks, the endpoints and the backup before a purge are done here, the same way for
`local`, `sim` and `chameleon`."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time

from rich.console import Console
from rich.table import Table

from core import state as core_state
from core.errors import UserError
from core.flags import flag
from core.state import DamagedState
from stack import access, backups, health, inventory, playbook, probe, settings
from stack.confirm import confirm_purge, confirm_restore
from stack.lock import StackLock
from stack.state import LOCK, Stack
from stack.targets import NotReady, Target, target_for

# Sentences are never wrapped (a path must stay one piece to be copied); tables fit the width.
console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)


@contextlib.contextmanager
def changing(stack: Stack, command: str, creates: bool = False):
    """The stack's lock for a command that changes it, taken before Ansible or Terraform run.
    A command that fails having made its state folder just now leaves nothing behind."""
    made = stack.create() if creates else []
    try:
        if not stack.folder.is_dir():
            yield  # nothing there to change
            return
        with StackLock(stack.folder / LOCK, f"make {command} ({stack.name})"):
            yield
    except BaseException:
        stack.undo_create(made)
        raise


# --- up --------------------------------------------------------------------------------------
def up(stack: Stack) -> None:
    target = target_for(stack, console)
    stack_vars = settings.inventory_variables(stack.cloud)  # a bad setting stops here
    target.preflight("up")
    if flag("DRY_RUN"):
        _show_up_plan(stack, target, stack_vars)
        return
    with changing(stack, "up", creates=True):
        if not stack.record.is_up:
            stack.update(state="starting")
        started = time.monotonic()
        try:
            made = target.make_hosts()
        except NotReady as exc:
            stack.update(state="reserved")
            console.print(str(exc))
            core_state.remember(stack.name)
            return
        inventory.write(stack, inventory.render(stack, made, stack_vars))
        stack.update(hosts=made.records(), versions=_versions())
        if flag("SIM_HOSTS_ONLY"):
            stack.update(state="hosts")
            console.print(f"hosts made; inventory {stack.display(stack.inventory)}")
            return
        target.before_configure()
        outcome = playbook.run(
            "site.yml", stack.inventory, stack.log_file("up"), what=f"make up ({stack.name})"
        )
        stack.step_done("configure")
        if target.remote:
            way_in, services_address = access.from_inventory(stack.folder, stack.inventory)
            access.point_clients_at_tunnels(
                stack.services_endpoints_file, stack.endpoints_file, way_in, services_address
            )
        checks, _ = _checks(stack, target, target.health_timeout())
        failing = [c for c in checks if not c.healthy]
        if not failing:
            stack.step_done("health")
            stack.update(state="up")
        changes = f"{outcome.changed} change(s)" if outcome.changed else "no changes"
        console.print(
            f"stack [bold]{stack.name}[/] (CLOUD={stack.cloud}) is configured ({changes}, "
            f"{time.monotonic() - started:.0f} s); Ansible log: {stack.display(outcome.log)}"
        )
        _report(stack, target, checks)
        if failing:
            c = failing[0]
            where = " on the services host" if target.remote else ""
            raise UserError(
                f"{c.service} is not healthy: {c.detail}; its log{where}: {c.log} "
                "(`make up` again repairs what drifted)"
            )
        for line in target.after_up():
            console.print(line)
    core_state.remember(stack.name)


def _show_up_plan(stack: Stack, target: Target, stack_vars: dict) -> None:
    lines = ["DRY_RUN=1: nothing is created or written.", *target.plan()]
    rendered = inventory.render(stack, target.planned_hosts(), stack_vars)
    import yaml

    lines += ["", f"inventory (written 0600 to {stack.display(stack.inventory)}):"]
    text = yaml.safe_dump(rendered, sort_keys=False, width=1000)
    lines += ["  " + line for line in text.splitlines()]
    lines += ["", f"then: ansible-playbook -i {stack.display(stack.inventory)} ansible/site.yml"]
    print("\n".join(lines))  # as is: the inventory's long lines must not be wrapped


def _versions() -> dict[str, str]:
    """The pinned versions of the services, as the roles install them."""
    from core.services import role_defaults

    keys = {"postgresql": "postgresql_version", "seaweedfs": "seaweedfs_version",
            "ray": "ray_version"}  # fmt: skip
    return {role: str(role_defaults(role)[key]) for role, key in keys.items()}


def _checks(
    stack: Stack, target: Target, timeout: float, with_nodes: bool = False
) -> tuple[list[health.Check], list[dict]]:
    """Each service checked as the user reaches it: directly, or through a tunnel."""
    endpoints = stack.endpoints()
    if endpoints is None:
        raise UserError(f"site.yml wrote no {stack.display(stack.endpoints_file)}; see its log")
    if not target.remote:
        checks = health.wait_healthy(endpoints, timeout) if timeout else health.check_all(endpoints)
        return checks, health.ray_nodes(endpoints) if with_nodes else []
    way_in, services_address = access.from_inventory(stack.folder, stack.inventory)
    return probe.check(endpoints, way_in, services_address, timeout, with_nodes)


def _report(stack: Stack, target: Target, checks: list[health.Check]) -> None:
    endpoints = stack.endpoints()
    table = Table(show_header=True, header_style="bold")
    for column in ("service", "health", "address", "detail", "log"):
        table.add_column(column)
    for c in checks:
        mark = "[green]ok[/]" if c.healthy else "[red]failing[/]"
        table.add_row(c.service, mark, c.url, c.detail, c.log)
    console.print(table)
    if endpoints is None:
        return
    password = stack.display(stack.folder / "secrets" / "mlflow_admin_password")
    token = stack.display(stack.folder / "secrets" / "ray_auth_token")
    lines = [
        f"MLflow UI   {endpoints.mlflow_tracking_uri}  user {endpoints.mlflow_username}, "
        f"password in {password}",
        f"Ray         {endpoints.ray_address}  token in {token}",
        f"checkpoints {endpoints.checkpoint_storage}",
    ]
    if target.remote:
        lines.append(
            "these addresses are the ends of `make tunnel` on this machine; commands that "
            "need the services open their own tunnel"
        )
    lines.append("`make train TASK=classify` now runs as a job on this stack")
    console.print("\n".join(lines))


# --- status ----------------------------------------------------------------------------------
def status(stack: Stack) -> None:
    record = core_state.StackRecord.read(stack.folder)  # damaged: its one error line
    if record is None and not stack.exists():
        console.print(f"no stack {stack.name!r}: start one with `make up`")
        return
    record = record or core_state.StackRecord(stack.name, stack.cloud)
    target = target_for(stack, console)
    running = target.running()
    shown = record.state or "unknown"
    if not running and shown in ("up", "starting"):
        shown = "down (its hosts are gone)"
    where = f", {record.site}" if record.site else ""
    console.print(
        f"stack [bold]{stack.name}[/] (CLOUD={stack.cloud}{where}): {shown} since "
        f"{record.updated or '?'}"
    )
    checks, nodes = [], None
    if record.is_up and running and stack.endpoints() is not None:
        try:
            checks, nodes = _checks(stack, target, 0, with_nodes=True)
        except UserError as exc:
            console.print(f"[red]the services do not answer[/]: {exc}")
    target.status_section(nodes)
    if checks:
        _report(stack, target, checks)
    elif not record.is_up:
        console.print("start it again with `make up` (its data was kept)")


# --- down ------------------------------------------------------------------------------------
def down(stack: Stack) -> None:
    purge = flag("PURGE")
    target = target_for(stack, console)
    if not stack.exists() and not stack.record_file.exists():
        if not target.clean_forgotten():
            console.print(f"no stack {stack.name!r} here; nothing to take down")
        return
    if flag("DRY_RUN"):
        lines = ["DRY_RUN=1: nothing is contacted, destroyed or written.", "would run:"]
        if purge or target.backs_up_on_down:
            lines.append("  back up MLflow's databases, artifacts, buckets and run records")
        lines += target.down_plan(purge)
        console.print("\n".join(lines), markup=False)
        return
    target.preflight("down")
    skip_backup = _skip_backup(stack)
    if purge:
        confirm_purge(stack, target.purge_deletes, target.keeps_folder_on_purge())
    with changing(stack, "down"):
        try:
            up = stack.record.is_up and target.running()
        except DamagedState as exc:
            console.print(f"{exc}; taking the stack down from what can be read")
            up = False
        if purge and not up and not target.backs_up_on_down:
            raise UserError(
                "PURGE=1 backs up MLflow's data before deleting it, which needs the stack "
                "running: run `make up`, then `make down PURGE=1`"
            )
        if up and (purge or target.backs_up_on_down):
            if skip_backup:
                console.print(
                    f"no backup (SKIP_BACKUP={stack.name}): {target.lost_without_backup()} is lost"
                )
            else:
                backed_up(stack, target)
        target.tear_down(purge)
        if purge and not target.keeps_folder_on_purge():
            if kept := stack.remove_folder():
                console.print(
                    f"kept in {stack.display(stack.folder)} what the stack did not write "
                    "there: " + ", ".join(kept)
                )
        else:
            _mark_down(stack)
    if purge:
        console.print(
            f"stack [bold]{stack.name}[/] is down and its data deleted "
            f"(backups are kept in {stack.display(stack.backups)})"
        )
    else:
        console.print(f"stack [bold]{stack.name}[/] is down; {target.kept_after_down()}")


def _mark_down(stack: Stack) -> None:
    try:
        stack.update(state="down")
    except DamagedState:
        core_state.StackRecord(stack.name, stack.cloud, state="down").save(stack.folder)


def backed_up(stack: Stack, target: Target) -> None:
    """The verified backup a purge (or Chameleon's `make down`) makes before deleting. Where
    the stack keeps costing while it stands (a lease), a backup that fails offers the way out
    instead of a dead end."""
    try:
        folder = backups.make(stack)
    except UserError as exc:
        way_out = ""
        if target.backs_up_on_down:
            way_out = (
                f" (its lease keeps charging): fix what failed and `make down` again, or take "
                f"it down without a backup, losing {target.lost_without_backup()}, with "
                f"`make down SKIP_BACKUP={stack.name}`"
            )
        raise UserError(f"{exc}; nothing was deleted and the stack still runs{way_out}") from None
    console.print(f"backed up to {stack.display(folder)} (verified)")


def _skip_backup(stack: Stack) -> bool:
    """SKIP_BACKUP=<stack name>: the typed confirmation that `make down` goes on without its
    backup; anything else is refused."""
    given = os.environ.get("SKIP_BACKUP", "").strip()
    if given and given != stack.name:
        raise UserError(
            f"SKIP_BACKUP={given} is not this stack's name; to go on without a backup, type "
            f"it: SKIP_BACKUP={stack.name}"
        )
    return bool(given)


# --- data ------------------------------------------------------------------------------------
def backup(stack: Stack) -> None:
    with changing(stack, "backup"):
        console.print(f"backup written to {stack.display(backups.make(stack))} (verified)")


def restore(stack: Stack) -> None:
    """Asks first (like a purge), backs the current data up, then restores."""
    target = target_for(stack, console)
    target.preflight("restore")
    given = os.environ.get("BACKUP", "").strip()
    folder = backups.chosen(stack, given)  # a missing or damaged backup is refused here
    confirm_restore(stack, given)
    with changing(stack, "restore"):
        safety = backups.make(stack)
        console.print(f"the current data is backed up first: {stack.display(safety)} (verified)")
        backups.restore(stack, folder, safety)
    console.print(
        f"restored {stack.display(folder)} into stack [bold]{stack.name}[/]: its runs, models, "
        "checkpoints and run records are back; the logins are this stack's own"
    )
    if stack.endpoints() is not None:
        checks, _ = _checks(stack, target, target.health_timeout())
        _report(stack, target, checks)


# --- tunnel, extend --------------------------------------------------------------------------
def tunnel(stack: Stack) -> None:
    """`make tunnel`: MLflow, Ray's dashboard and the object store on this machine's ports,
    forwarded through the gateway until Ctrl-C."""
    if not target_for(stack, console).remote:
        raise UserError("make tunnel is for CLOUD=chameleon and CLOUD=sim stacks")
    if not stack.is_up or not stack.inventory.is_file():
        raise UserError(f"stack {stack.name!r} is not up; `make up CLOUD={stack.cloud}` first")
    way_in, services_address = access.from_inventory(stack.folder, stack.inventory)
    cmd = access.tunnel_command(way_in, services_address)
    for name, url in access.local_urls().items():
        console.print(f"{name:22} {url}")
    console.print("tunnels open through the gateway; Ctrl-C closes them")
    try:
        proc = subprocess.run(cmd, check=False)
    except KeyboardInterrupt:
        return
    if proc.returncode not in (0, 130):
        raise UserError(
            f"ssh tunnel ended (exit {proc.returncode}): a local port may be in use "
            f"({', '.join(map(str, access.tunnelled_ports().values()))}) or the gateway "
            "unreachable"
        )


def extend(stack: Stack) -> None:
    target_for(stack, console).extend()
