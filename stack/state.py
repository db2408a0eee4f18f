"""The state folder of one stack: `.stack/<name>/` (0700, git-ignored).

It holds the inventory Ansible ran with, the endpoints file the training package reads, the
generated secrets (0600), the Ansible logs and `stack.json` (what `make status` reports)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from core import state
from core.paths import REPO_ROOT, state_root

CLOUDS = ("local", "sim", "chameleon")


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

    def create(self) -> None:
        state_root().mkdir(mode=0o700, parents=True, exist_ok=True)
        self.folder.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.folder, 0o700)

    def exists(self) -> bool:
        return self.record_file.is_file() or self.inventory.is_file()

    def endpoints(self) -> state.Endpoints | None:
        return state.Endpoints.read(self.folder)

    def record(self) -> dict:
        record = state.StackRecord.read(self.folder)
        return record.to_dict() if record else {}

    def save_record(self, **fields) -> None:
        record = {**self.record(), "name": self.name, "cloud": self.cloud, **fields}
        tmp = self.record_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        os.chmod(tmp, 0o600)
        tmp.replace(self.record_file)

    @property
    def is_up(self) -> bool:
        return self.record().get("state") == "up"

    def display(self, path: Path) -> str:
        """A path as the user would type it: relative to the repository when inside it."""
        try:
            return str(path.relative_to(REPO_ROOT))
        except ValueError:
            return str(path)
