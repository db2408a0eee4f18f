"""The state folder of one stack: `.stack/<name>/` (0700, git-ignored).

It holds the inventory Ansible ran with, the endpoints file the training package reads, the
generated secrets (0600), the Ansible logs and `stack.json` (what `make status` reports)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from core import state
from core.errors import UserError
from core.paths import REPO_ROOT, state_root

CLOUDS = ("local", "sim", "chameleon")
# Written into every folder the stack makes (STACK_DIR and .stack/<name>/): a folder without it
# was not made by the stack, so the stack neither adopts nor deletes it.
MARKER = ".chameleon-mlops-state"
LOCK = "lock"
# The services' own addresses as site.yml writes them where clients reach the services through
# SSH tunnels (Chameleon, sim); endpoints.json is derived from it (stack/access.py).
SERVICES_ENDPOINTS = "services-endpoints.json"
# Everything the stack (its CLI, Ansible's site.yml, the sim and chameleon flows) writes into
# .stack/<name>/; purge deletes these and nothing else.
WRITTEN = (
    MARKER,
    LOCK,
    state.STACK_RECORD,
    state.ENDPOINTS,
    SERVICES_ENDPOINTS,
    "stack.tmp",
    "inventory.yml",
    "secrets",
    "logs",
    "known_hosts",
    "sim.json",
    "hosts",
    "ssh-control",
    "terraform",
    "wheels",  # the training package built for the Ray nodes (the ray role)
)
# What may sit in STACK_DIR besides stack folders (the embedded target's runs, the backups).
ROOT_ENTRIES = ("embedded", "backups", state.CURRENT, MARKER)


def state_root_as_given() -> Path:
    """STACK_DIR as the user gave it (absolute, symlinks not followed)."""
    return Path(os.path.abspath(os.environ.get("STACK_DIR") or REPO_ROOT / ".stack"))


def _made_by_stack(folder: Path) -> bool:
    # stack.json: a folder an earlier version of the stack made, before the marker existed.
    return (folder / MARKER).is_file() or (folder / state.STACK_RECORD).is_file()


@dataclass
class Stack:
    name: str
    cloud: str

    @property
    def folder(self) -> Path:
        return state.stack_folder(self.name)

    @property
    def inventory(self) -> Path:
        return self.folder / "inventory.yml"

    @property
    def endpoints_file(self) -> Path:
        return self.folder / state.ENDPOINTS

    @property
    def services_endpoints_file(self) -> Path:
        return self.folder / SERVICES_ENDPOINTS

    @property
    def record_file(self) -> Path:
        return self.folder / state.STACK_RECORD

    @property
    def backups(self) -> Path:
        # Outside the stack's own folder: PURGE deletes that folder, never the backups.
        return state_root() / "backups" / self.name

    def log_file(self, action: str) -> Path:
        logs = self.folder / "logs"
        logs.mkdir(mode=0o700, parents=True, exist_ok=True)
        return logs / f"{action}-{time.strftime('%Y%m%d-%H%M%S')}.log"

    def check_folder(self) -> None:
        """Refuse, before anything runs, a state folder the stack did not make or a symlink
        (STACK_DIR=/usr with STACK_NAME=local would make /usr/local the state folder)."""
        root = state_root_as_given()
        folder = root / self.name
        for path in (root, folder):
            if path.is_symlink():
                raise UserError(
                    f"{path} is a symlink; the state folder must be a real folder the stack "
                    "made: point STACK_DIR at a new or empty folder"
                )
        if root.is_dir() and not (root / MARKER).is_file():
            strangers = [
                e.name
                for e in root.iterdir()
                if e.name not in ROOT_ENTRIES and not (e.is_dir() and _made_by_stack(e))
            ]
            if strangers:
                raise UserError(
                    f"STACK_DIR={root} holds {', '.join(sorted(strangers)[:3])}, which the stack "
                    "did not make; point STACK_DIR at a new or empty folder"
                )
        if folder.exists() and not (folder.is_dir() and _made_by_stack(folder)):
            raise UserError(
                f"{folder} exists but the stack did not make it (no {MARKER} in it); pick "
                "another STACK_NAME or STACK_DIR"
            )

    def create(self) -> list[Path]:
        """Make (or adopt) the state folder; returns the folders it made just now."""
        self.check_folder()
        root = state_root()
        made = [p for p in (root, self.folder) if not p.exists()]
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        (root / MARKER).touch(mode=0o600, exist_ok=True)
        self.folder.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.folder, 0o700)
        (self.folder / MARKER).touch(mode=0o600, exist_ok=True)
        return made

    def undo_create(self, made: list[Path]) -> None:
        """Remove the folders `create` just made if nothing but the marker and the lock went
        into them (a command refused before it did anything leaves nothing behind)."""
        for folder in reversed(made):  # the stack's folder, then STACK_DIR
            if folder.is_dir() and {p.name for p in folder.iterdir()} <= {MARKER, LOCK}:
                shutil.rmtree(folder)

    def remove_folder(self) -> list[str]:
        """Delete what the stack wrote into its folder, then the folder if nothing else is
        left; returns the names it kept (files the stack did not write)."""
        self.check_folder()
        for name in WRITTEN:
            path = self.folder / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
        kept = sorted(p.name for p in self.folder.iterdir()) if self.folder.is_dir() else []
        if self.folder.is_dir() and not kept:
            self.folder.rmdir()
        return kept

    def exists(self) -> bool:
        return self.record_file.is_file() or self.inventory.is_file()

    def endpoints(self) -> state.Endpoints | None:
        return state.Endpoints.read(self.folder)

    @property
    def record(self) -> state.StackRecord:
        """The stack's record (a new one when there is none yet); a damaged file is a
        one-line DamagedState."""
        return state.StackRecord.read(self.folder) or state.StackRecord(self.name, self.cloud)

    def update(self, **fields) -> state.StackRecord:
        """Change fields of the record and write it; returns the new record."""
        record = dataclasses.replace(self.record, name=self.name, cloud=self.cloud, **fields)
        record.save(self.folder)
        return record

    def update_lease(self, **changes) -> state.StackRecord:
        return self.update(lease=dataclasses.replace(self.record.lease, **changes))

    def step_done(self, step: str) -> None:
        self.update(steps={**self.record.steps, step: state.now()})

    @property
    def is_up(self) -> bool:
        return self.record.is_up

    def display(self, path: Path) -> str:
        """A path as the user would type it: relative to the repository when inside it."""
        try:
            return str(path.relative_to(REPO_ROOT))
        except ValueError:
            return str(path)
