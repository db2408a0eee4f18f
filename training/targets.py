"""Where a run tracks and stores: a stack, environment overrides, or the embedded default.

- A stack is up (`make up`; its `.stack/<name>/endpoints.json`): the command is submitted as a
  Ray job to the stack's cluster (training/jobs.py).
- Inside such a job: the Ray nodes' environment names the stack's MLflow, checkpoint storage
  and the folder for run records (TRAINING_STATE_DIR), all set by the Ansible ray role.
- Embedded default (no stack up): an in-process Ray cluster, MLflow's own SQLite store and local
  checkpoints, all under the repo's state folder `.stack/embedded/` (git-ignored)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from core.paths import state_root

@dataclass
class Target:
    name: str  # "local", "sim" or "chameleon"
    state_dir: Path
    tracking_uri: str
    runs_root: str  # Ray storage path: a local folder or s3://bucket/prefix
    artifact_root: str | None  # where a new MLflow experiment keeps artifacts (embedded only)
    stack: dict | None = None  # endpoints of the stack to submit jobs to (client side only)
    in_job: bool = False  # running as a job on a stack's Ray cluster

    @property
    def embedded(self) -> bool:
        return self.tracking_uri.startswith("sqlite:")

    def run_folder(self, run_name: str) -> Path:
        """The driver's record of a run (config, data manifest, smoke base model); for the
        embedded target also Ray's checkpoints of it."""
        return self.state_dir / "runs" / run_name

    def default_profile(self) -> str:
        return "full" if self.name == "chameleon" else "smoke"

    def run_url(self, experiment_id: str, run_id: str) -> str:
        base = self.tracking_uri.rstrip("/") if not self.embedded else "http://127.0.0.1:5000"
        return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def in_job() -> bool:
    """Running as a Ray job on a stack (the job supervisor sets RAY_ADDRESS, the ray role
    TRAINING_STATE_DIR)."""
    return bool(os.environ.get("RAY_ADDRESS") and os.environ.get("TRAINING_STATE_DIR"))


def stack_name() -> str:
    return os.environ.get("STACK_NAME") or os.environ.get("CLOUD") or "local"


def stack_endpoints() -> dict | None:
    """The endpoints of the stack that is up (`make up` was the last word), else None."""
    folder = state_root() / stack_name()
    record = folder / "stack.json"
    if not record.is_file() or json.loads(record.read_text()).get("state") != "up":
        return None
    return json.loads((folder / "endpoints.json").read_text())


def resolve() -> Target:
    if in_job():
        return Target(
            "local",
            Path(os.environ["TRAINING_STATE_DIR"]),
            os.environ["MLFLOW_TRACKING_URI"],
            os.environ["CHECKPOINT_STORAGE"],
            None,
            in_job=True,
        )
    state = state_root() / "embedded"
    tracking = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{state / 'mlflow.db'}"
    runs = os.environ.get("CHECKPOINT_STORAGE") or str(state / "runs")
    artifacts = str(state / "mlartifacts") if tracking.startswith("sqlite:") else None
    explicit = os.environ.get("MLFLOW_TRACKING_URI") or os.environ.get("CHECKPOINT_STORAGE")
    stack = None if explicit else stack_endpoints()
    if stack is not None:
        tracking = stack["mlflow_tracking_uri"]
    return Target("local", state, tracking, runs, artifacts, stack=stack)
