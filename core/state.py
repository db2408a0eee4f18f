"""The state folder's contract: what `make up` writes into `.stack/<name>/` and what the
training package reads from it, typed here so both sides agree.

- `stack.json`: the stack record (`StackRecord`, versioned): its name, cloud and state
  ("starting", "hosts", "up", "down"), where it runs (site, hardware), its lease, hosts and
  the versions it runs. Read and written only through this module.
- `endpoints.json`: written by the last play of `ansible/site.yml`: where clients reach MLflow,
  Ray and the object store, and the files that hold their credentials (never the secrets).
- `.stack/current`: the name of the stack the last `make up` was for, which commands given no
  STACK_NAME or CLOUD are about (so `make up CLOUD=chameleon` is followed by a plain
  `make train`).

A damaged file (truncated, not JSON, wrong types) is a `DamagedState`: one line naming the file
and how to recover, never a traceback."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from core.errors import UserError
from core.paths import state_root

STACK_RECORD = "stack.json"
ENDPOINTS = "endpoints.json"
CURRENT = "current"
RECORD_VERSION = 2  # 1: the untyped record, with a target's own fields under "chameleon"


class DamagedState(UserError):
    """A state file that cannot be read; the message names it and the way out."""


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


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


@dataclass
class LeaseRecord:
    """A Chameleon lease as the stack keeps it (times in ISO 8601, UTC)."""

    id: str = ""
    name: str = ""
    status: str = ""
    start: str = ""
    end: str = ""
    hours: int = 0
    pinned_for: str = ""  # the lease whose instances' host keys known_hosts holds
    # Blazar refused to prolong it (KVM flavor reservations): it reads ERROR, yet its
    # instances run until its end.
    extend_refused: bool = False

    def end_time(self) -> datetime | None:
        return datetime.fromisoformat(self.end).astimezone(UTC) if self.end else None


@dataclass
class HostRecord:
    name: str
    address: str  # its private address, which the other stack hosts reach it at
    groups: list[str] = field(default_factory=list)


@dataclass
class StackRecord:
    name: str
    cloud: str
    state: str = ""  # "starting", "hosts" (sim: hosts only), "up" or "down"
    updated: str = ""
    version: int = RECORD_VERSION
    site: str = ""  # Chameleon's site
    account: str = ""  # the clouds.yaml entry it was made with
    hardware: str = ""  # the GPU flavor or node type
    gpu_count: int = 0
    lease: LeaseRecord = field(default_factory=LeaseRecord)
    steps: dict[str, str] = field(default_factory=dict)  # `make up`'s steps done, with when
    hosts: list[HostRecord] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)  # the services' pinned versions

    @property
    def is_up(self) -> bool:
        return self.state == "up"

    @property
    def lease_end(self) -> str:
        return self.lease.end

    @classmethod
    def read(cls, folder: Path) -> StackRecord | None:
        path = folder / STACK_RECORD
        values = _load(path)
        if values is None:
            return None
        try:
            return cls.from_dict(_migrate(values))
        except (TypeError, ValueError, KeyError, AttributeError):
            raise _damaged(path, "its fields are not a stack record") from None

    @classmethod
    def from_dict(cls, values: dict) -> StackRecord:
        values = {k: v for k, v in values.items() if k in _names(cls)}
        record = cls(**values)
        if isinstance(values.get("lease"), dict):
            record.lease = LeaseRecord(**values["lease"])
        record.hosts = [HostRecord(**h) if isinstance(h, dict) else h for h in record.hosts]
        for name, kind in (("name", str), ("cloud", str), ("state", str), ("gpu_count", int)):
            if not isinstance(getattr(record, name), kind):
                raise TypeError(name)
        if not isinstance(record.lease, LeaseRecord) or not isinstance(record.steps, dict):
            raise TypeError("lease")
        return record

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, folder: Path) -> None:
        """Write it atomically, 0600 from the first byte."""
        self.updated = now()
        path = folder / STACK_RECORD
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(self.to_dict(), indent=2) + "\n")
        tmp.replace(path)


def _migrate(values: dict) -> dict:
    """A record of an earlier version in today's shape (nothing it held is lost)."""
    if values.get("version", 1) >= RECORD_VERSION:
        return values
    old = dict(values.pop("chameleon", None) or {})
    values.pop("extra", None)
    lease = {
        "id": old.get("lease_id") or "",
        "end": old.get("lease_end") or "",
        "hours": old.get("lease_hours") or 0,
        "pinned_for": old.get("pinned_for_lease") or "",
    }
    return {
        **values,
        "version": RECORD_VERSION,
        "site": old.get("site", ""),
        "account": old.get("cloud", ""),
        "hardware": old.get("gpu_hardware", ""),
        "gpu_count": old.get("gpu_count", 0),
        "steps": old.get("steps", {}),
        "lease": lease,
    }


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
    # Chameleon, sim: the URLs above are the local ends of `make tunnel` ("make tunnel" here),
    # and the services' own addresses, reachable only inside the stack, are kept under
    # `private`.
    reached_through: str = ""
    private: dict = field(default_factory=dict)
    # How a command opens its own tunnel (core/tunnel.py): the ssh arguments to the gateway
    # and each tunnelled field's private "host:port". Empty where the services are reached
    # directly (`local`).
    tunnel: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # keys this version does not know yet

    @classmethod
    def read(cls, folder: Path) -> Endpoints | None:
        path = folder / ENDPOINTS
        values = _load(path)
        if values is None:
            return None
        known = _names(cls) - {"extra"}
        try:
            return cls(
                **{k: v for k, v in values.items() if k in known},
                extra={k: v for k, v in values.items() if k not in known},
            )
        except TypeError:
            raise _damaged(path, "it lacks fields every stack writes") from None

    def log(self, service: str) -> str:
        return self.service_logs.get(service, "")

    def unreachable_hint(self) -> str:
        return "`make status` shows the services"


def _names(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _load(path: Path) -> dict | None:
    """The file's JSON object; None when there is no file."""
    if not path.is_file():
        return None
    try:
        values = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise _damaged(path, "it is not JSON (truncated?)") from None
    if not isinstance(values, dict):
        raise _damaged(path, "it is not a JSON object")
    return values


def _damaged(path: Path, why: str) -> DamagedState:
    how = (
        "`make up` writes it again"
        if path.name == ENDPOINTS
        else f"move it aside (e.g. `mv {path} {path}.bad`), then `make status` or `make down` "
        "works from what is left, and `make up` writes a new one"
    )
    return DamagedState(f"{path} cannot be read: {why}; {how}")


def stack_up(name: str) -> tuple[StackRecord, Endpoints] | None:
    """The record and endpoints of the stack `name` if it is up (`make up` was the last
    word), else None."""
    folder = stack_folder(name)
    record = StackRecord.read(folder)
    endpoints = Endpoints.read(folder) if record is not None and record.is_up else None
    return (record, endpoints) if endpoints is not None else None
