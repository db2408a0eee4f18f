"""Command line: `python -m stack up|status|down|backup|restore` (what `make up` etc. run).

CLOUD=local (the default) puts every service on this machine; STACK_NAME names the stack
(default: the cloud's name, else the stack the last `make up` was for), whose state lives in
.stack/<name>/. `down` keeps the data unless PURGE=1, which first backs it up (verified) into
.stack/backups/<name>/; `restore` puts such a backup back. A user error prints one line and
exits 2."""

from __future__ import annotations

import argparse
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
from core.state import Endpoints
from stack import access, backups, health, inventory, playbook, ports
from stack.confirm import confirm_purge
from stack.lock import StackLock
from stack.sim import flow as sim_flow
from stack.state import CLOUDS, LOCK, ROOT_ENTRIES, Stack

EXIT_USER_ERROR = 2
console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def current_stack() -> Stack:
    """The stack a command is about (core.state.stack_name) and its cloud: CLOUD=, else the
    one the stack was made for, else local."""
    given = os.environ.get("CLOUD") or ""
    if given and given not in CLOUDS:
        raise UserError(f"CLOUD={given} is not a target; use one of {', '.join(CLOUDS)}")
    name = core_state.stack_name()
    if name in ROOT_ENTRIES or not name.replace("-", "").isalnum():
        raise UserError(f"STACK_NAME={name!r} is not usable; pick letters, digits and dashes")
    record = core_state.StackRecord.read(core_state.stack_folder(name))
    made_for = record.cloud if record else ""
    if given and made_for and given != made_for:
        raise UserError(
            f"stack {name!r} is a CLOUD={made_for} stack; drop CLOUD= to use it, or name "
            "another stack with STACK_NAME="
        )
    return Stack(name, given or made_for or "local")


def up(stack: Stack) -> None:
    _need_root()
    # Ports are ours after any earlier `up` of this stack (even a failed one) until `down`.
    ours = stack.record().get("state") in ("up", "starting")
    if not ours and (busy := ports.taken_ports()):
        port, name = next(iter(busy.items()))
        raise UserError(
            f"port {port} ({name}) is already in use by another program; stop it "
            f"(`ss -ltnp 'sport = :{port}'` shows which) and run `make up` again"
        )
    stack.create()
    inventory.write(stack)
    if not ours:
        stack.save_record(state="starting", updated=_now())
    started = time.monotonic()
    outcome = playbook.run(
        "site.yml", stack.inventory, stack.log_file("up"), what=f"make up ({stack.name})"
    )
    endpoints = stack.endpoints()
    checks = health.wait_healthy(endpoints)
    stack.save_record(state="up", updated=_now())
    changes = f"{outcome.changed} change(s)" if outcome.changed else "no changes"
    console.print(
        f"stack [bold]{stack.name}[/] is up ({changes}, {time.monotonic() - started:.0f} s); "
        f"Ansible log: {stack.display(outcome.log)}"
    )
    _report(stack, endpoints, checks)
    if failing := [c for c in checks if not c.healthy]:
        c = failing[0]
        raise UserError(f"{c.service} is not healthy: {c.detail}; its log: {c.log}")


def status(stack: Stack) -> None:
    endpoints = stack.endpoints()
    if endpoints is None or not stack.exists():
        console.print(f"no stack {stack.name!r}: start one with `make up`")
        return
    record = stack.record()
    state = record.get("state", "unknown")
    console.print(
        f"stack [bold]{stack.name}[/] (CLOUD={stack.cloud}): {state} since "
        f"{record.get('updated', '?')}"
    )
    if state == "up":
        _report(stack, endpoints, health.check_all(endpoints))
    else:
        console.print("start it again with `make up` (its data was kept)")


def down(stack: Stack, purge: bool) -> None:
    if not stack.exists():
        console.print(f"no stack {stack.name!r} here; nothing to take down")
        return
    _need_root()
    inventory.write(stack)
    if purge:
        if not stack.is_up:
            raise UserError(
                "PURGE=1 backs up MLflow's data before deleting it, which needs the stack "
                "running: run `make up`, then `make down PURGE=1`"
            )
        _backed_up(stack)
    outcome = playbook.run(
        "down.yml",
        stack.inventory,
        stack.log_file("down"),
        {"stack_purge": purge},
        what=f"make down ({stack.name})",
    )
    stack.save_record(state="down", updated=_now())
    if busy := ports.wait_free():
        held = ", ".join(f"{port} ({name})" for port, name in busy.items())
        raise UserError(
            f"services stopped, but ports are still held: {held}; see {stack.display(outcome.log)}"
        )
    if purge:
        kept = stack.remove_folder()
        if kept:
            console.print(
                f"kept in {stack.display(stack.folder)} what the stack did not write there: "
                + ", ".join(kept)
            )
        console.print(
            f"stack [bold]{stack.name}[/] is down and its data deleted "
            f"(backup kept in {stack.display(stack.backups)})"
        )
    else:
        console.print(
            f"stack [bold]{stack.name}[/] is down; its data is kept "
            "(`make up` brings it back, `make down PURGE=1` deletes it)"
        )


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _need_root() -> None:
    """The local stack installs packages and services on this machine."""
    if os.geteuid() == 0:
        return
    if subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode != 0:
        raise UserError(
            "CLOUD=local configures this machine (packages, services) and needs root or "
            "passwordless sudo; run it as root or with `sudo -v` first"
        )


def _report(stack: Stack, endpoints: Endpoints, checks: list[health.Check]) -> None:
    table = Table(show_header=True, header_style="bold")
    for column in ("service", "health", "address", "detail", "log"):
        table.add_column(column)
    for c in checks:
        mark = "[green]ok[/]" if c.healthy else "[red]failing[/]"
        table.add_row(c.service, mark, c.url, c.detail, c.log)
    console.print(table)
    password = stack.display(stack.folder / "secrets" / "mlflow_admin_password")
    token = stack.display(stack.folder / "secrets" / "ray_auth_token")
    console.print(
        f"MLflow UI   {endpoints.mlflow_tracking_uri}  user "
        f"{endpoints.mlflow_username}, password in {password}\n"
        f"Ray         {endpoints.ray_address}  token in {token}\n"
        f"checkpoints {endpoints.checkpoint_storage}\n"
        "`make train TASK=classify` now runs as a job on this stack"
    )


def _chameleon(stack: Stack, command: str, purge: bool) -> None:
    from stack.chameleon import flow  # python-chi and its clients load only for this target

    dry_run = flag("DRY_RUN")
    if command == "up":
        flow.up(stack, dry_run, configure=lambda inventory: _configure(stack, inventory))
    elif command == "down":
        # The tracking data is backed up before the compute (and its disks) go.
        flow.down(stack, dry_run, purge, backup=_backed_up)
    elif command in ("backup", "restore"):
        _data(stack, command)
    elif command == "tunnel":
        tunnel(stack)
    else:
        getattr(flow, command)(stack)


def tunnel(stack: Stack) -> None:
    """`make tunnel`: MLflow, Ray's dashboard and the object store on this machine's ports,
    forwarded through the gateway until Ctrl-C."""
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


def _backed_up(stack: Stack) -> None:
    """The verified backup a purge (or Chameleon's `make down`) makes before deleting anything."""
    try:
        folder = backups.make(stack)
    except UserError as exc:
        raise UserError(f"{exc}; nothing was deleted and the stack still runs") from None
    console.print(f"backed up to {stack.display(folder)} (verified)")


def _configure(stack: Stack, inventory_file) -> None:
    outcome = playbook.run(
        "site.yml", inventory_file, stack.log_file("up"), what=f"make up ({stack.name})"
    )
    console.print(f"configured ({outcome.changed} change(s)); Ansible log: {outcome.log}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stack",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="configure the stack (again); prints its URLs and logins")
    sub.add_parser("status", help="what is up, the health of each service, URLs")
    sub.add_parser("down", help="stop the services; PURGE=1 also deletes the data (backed up)")
    sub.add_parser("backup", help="back the databases, artifacts, buckets, run records up")
    sub.add_parser("restore", help="put the backup BACKUP= names into the running stack")
    sub.add_parser("extend", help="CLOUD=chameleon: prolong the lease by HOURS=")
    sub.add_parser("tunnel", help="chameleon, sim: SSH tunnels to MLflow, Ray, the object store")
    args = parser.parse_args(argv)
    try:
        stack = current_stack()
        # Everything that can refuse does so before anything runs (and before the lock).
        stack.check_folder()
        dry_run, purge = flag("DRY_RUN"), flag("PURGE")
        if args.command == "down" and purge and not dry_run and stack.exists():
            confirm_purge(stack)
        made: list = []
        try:
            with _lock(stack, args.command, dry_run, made):
                code = _dispatch(stack, args.command, purge)
        except BaseException:
            stack.undo_create(made)
            raise
        if args.command == "up" and not dry_run:
            core_state.remember(stack.name)  # the stack later commands without STACK_NAME use
        return code
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(
            "interrupted; the stack may be half-configured: `make status` shows it, "
            "`make up` completes it, `make down` stops it",
            file=sys.stderr,
        )
        return 130


def _lock(stack: Stack, command: str, dry_run: bool, made: list):
    """The stack's lock for the commands that change it; taken before Ansible or Terraform.
    `made` gets the folders made for it, which a refused command removes again."""
    if command not in ("up", "down", "backup", "restore") or dry_run:
        return contextlib.nullcontext()
    if command == "up":
        made += stack.create()
    elif not stack.folder.is_dir():
        return contextlib.nullcontext()  # nothing there to change
    return StackLock(stack.folder / LOCK, f"make {command} ({stack.name})")


def _dispatch(stack: Stack, command: str, purge: bool) -> int:
    if stack.cloud == "sim" and command not in ("tunnel", "backup"):
        return sim_flow.run(command, stack, purge, backup=_backed_up)
    if stack.cloud == "chameleon":
        _chameleon(stack, command, purge)
    elif command == "extend":
        raise UserError("make extend is for CLOUD=chameleon stacks")
    elif command == "tunnel":
        if stack.cloud == "local":
            raise UserError("make tunnel is for CLOUD=chameleon and CLOUD=sim stacks")
        tunnel(stack)
    elif command == "up":
        up(stack)
    elif command == "status":
        status(stack)
    elif command == "down":
        down(stack, purge=purge)
    else:
        _data(stack, command)
    return 0


def _data(stack: Stack, command: str) -> None:
    """`make backup` and `make restore`."""
    if command == "backup":
        console.print(f"backup written to {stack.display(backups.make(stack))} (verified)")
        return
    if stack.cloud == "local":
        _need_root()
    folder = backups.restore(stack, os.environ.get("BACKUP", "").strip())
    console.print(
        f"restored {stack.display(folder)} into stack [bold]{stack.name}[/]: its runs, models, "
        "checkpoints and run records are back; the logins are this stack's own"
    )
    # Elsewhere the services answer through `make tunnel`.
    if stack.cloud == "local" and (endpoints := stack.endpoints()):
        _report(stack, endpoints, health.wait_healthy(endpoints))
