"""The state folder's contract: what `make up` writes into `.stack/<name>/` and what the
training package reads from it, typed here so both sides agree.

- `stack.json`: the stack record (its name, cloud and state: "starting", "up", "down").
- `endpoints.json`: written by the last play of `ansible/site.yml`: where clients reach MLflow,
  Ray and the object store, and the files that hold their credentials (never the secrets).
- `.stack/current`: the name of the stack the last `make up` was for, which commands given no
  STACK_NAME or CLOUD are about (so `make up CLOUD=chameleon` is followed by a plain
  `make train`)."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from core.paths import state_root

STACK_RECORD = "stack.json"
ENDPOINTS = "endpoints.json"
CURRENT = "current"


def stack_name(environ=None) -> str:
    """The stack a command is about: STACK_NAME, else the cloud's name, else the stack the last
    `make up` was for (while its folder is there), else "local"."""
    environ = os.environ if environ is None else environ
    return environ.get("STACK_NAME") or environ.get("CLOUD") or remembered() or "local"


def remembered() -> str:
    path = state_root() / CURRENT
    name = path.read_text().strip() if path.is_file() else ""
    return name if name and (stack_folder(name) / STACK_RECORD).is_file() else ""


def remember(name: str) -> None:
    """Make `name` the stack that commands given no STACK_NAME or CLOUD are about."""
    tmp = state_root() / (CURRENT + ".tmp")
    tmp.write_text(name + "\n")
    tmp.replace(state_root() / CURRENT)


def stack_folder(name: str) -> Path:
    return state_root() / name


@dataclass
class StackRecord:
    name: str
    cloud: str
    state: str = ""  # "starting", "up" or "down"
    updated: str = ""
    extra: dict = field(default_factory=dict)  # what a target keeps of its own (a lease, ...)

    @property
    def is_up(self) -> bool:
        return self.state == "up"

    @classmethod
    def read(cls, folder: Path) -> StackRecord | None:
        return _read(cls, folder / STACK_RECORD)

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        return {**values.pop("extra"), **values}


@dataclass
class Endpoints:
    mlflow_tracking_uri: str
    mlflow_username: str
    mlflow_password_file: str
    ray_address: str
    ray_auth_token_file: str
    checkpoint_storage: str = ""
    mlflow_artifact_location: str = ""
    object_store: str = ""  # "seaweedfs" (the stack's own) or "external" (S3_ENDPOINT=)
    s3_endpoint: str | None = None
    s3_buckets: dict = field(default_factory=dict)  # artifacts, checkpoints, datasets
    s3_access_key_id: str | None = None
    s3_secret_key_file: str | None = None
    datasets_storage: str | None = None
    postgresql_address: str = ""
    mlflow_training_username: str = ""  # the jobs' own MLflow user (edit rights, not admin)
    mlflow_training_password_file: str = ""
    service_logs: dict = field(default_factory=dict)
    # Chameleon: the URLs above are the local ends of `make tunnel` ("make tunnel" here), and
    # the services' own addresses, reachable only inside the stack, are kept under `private`.
    reached_through: str = ""
    private: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # keys this version does not know yet

    @classmethod
    def read(cls, folder: Path) -> Endpoints | None:
        return _read(cls, folder / ENDPOINTS)

    def log(self, service: str) -> str:
        return self.service_logs.get(service, "")

    def unreachable_hint(self) -> str:
        if self.reached_through:
            return f"open the tunnels with `{self.reached_through}` in another terminal"
        return "`make status` shows the services"


def _read(cls, path: Path):
    """The file as `cls`; keys this version does not know go to `extra`, never lost."""
    if not path.is_file():
        return None
    values = json.loads(path.read_text())
    known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
    return cls(
        **{k: v for k, v in values.items() if k in known},
        extra={k: v for k, v in values.items() if k not in known},
    )


def stack_up(name: str) -> tuple[StackRecord, Endpoints] | None:
    """The record and endpoints of the stack `name` if it is up (`make up` was the last
    word), else None."""
    folder = stack_folder(name)
    record = StackRecord.read(folder)
    endpoints = Endpoints.read(folder) if record is not None and record.is_up else None
    return (record, endpoints) if endpoints is not None else None
