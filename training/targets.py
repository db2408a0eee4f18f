"""Where a run tracks and stores: a stack, environment overrides, or the embedded default.

- A stack is up (`make up`; read through core.state): the command is submitted as a Ray job to
  the stack's cluster (training/jobs.py).
- Inside such a job: the Ray nodes' environment names the stack's MLflow, checkpoint storage
  and the folder for run records (TRAINING_STATE_DIR), all set by the Ansible ray role; the
  submitting client names the cloud, the lease's end, the hardware and MLflow's address as
  the user reaches it (Target.job_environment).
- Embedded default (no stack up): an in-process Ray cluster, MLflow's own SQLite store and local
  checkpoints, all under the repo's state folder `.stack/embedded/` (git-ignored)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from core import state
from core.paths import state_root


@dataclass
class Target:
    cloud: str  # "local", "sim" or "chameleon": picks the profile's default
    state_dir: Path
    tracking_uri: str
    runs_root: str  # Ray storage path: a local folder or s3://bucket/prefix
    artifact_root: str | None  # where a new MLflow experiment keeps artifacts (embedded only)
    stack: state.Endpoints | None = None  # the stack to submit jobs to (client side only)
    in_job: bool = False  # running as a job on a stack's Ray cluster
    lease_end: str = ""  # ISO time the stack's lease ends (Chameleon), "" when it has none
    hardware: str = ""  # the stack's GPU hardware (a flavor or node type), "" when unknown
    # MLflow's address as the user's browser reaches it (through `make tunnel` on Chameleon
    # and sim, where the job's own tracking URI is private); "" = tracking_uri
    ui_uri: str = ""

    @property
    def embedded(self) -> bool:
        return self.tracking_uri.startswith("sqlite:")

    def run_folder(self, run_name: str) -> Path:
        """The driver's record of a run (config, data manifest, model source); for the
        embedded target also Ray's checkpoints of it."""
        return self.state_dir / "runs" / run_name

    def default_profile(self) -> str:
        return "full" if self.cloud == "chameleon" else "smoke"

    def run_url(self, experiment_id: str, run_id: str) -> str:
        base = self.ui_uri or self.tracking_uri
        base = base.rstrip("/") if not self.embedded else "http://127.0.0.1:5000"
        return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"

    def job_environment(self) -> dict[str, str]:
        """What a job learns of its stack from the submitting client (read back by resolve)."""
        env = {"STACK_CLOUD": self.cloud}
        if self.lease_end:
            env["STACK_LEASE_END"] = self.lease_end
        if self.hardware:
            env["STACK_HARDWARE"] = self.hardware
        if not self.embedded:
            env["STACK_MLFLOW_UI"] = self.tracking_uri  # the client's: a tunnel's end, maybe
        return env

    def describe(self) -> str:
        if self.in_job:
            return f"a job on the {self.cloud} stack's Ray cluster"
        if self.stack is not None:
            return f"the {self.cloud} stack (as a Ray job at {self.stack.ray_address})"
        return "this machine (in-process Ray)"


def in_job() -> bool:
    """Running as a Ray job on a stack (the job supervisor sets RAY_ADDRESS, the ray role
    TRAINING_STATE_DIR)."""
    return bool(os.environ.get("RAY_ADDRESS") and os.environ.get("TRAINING_STATE_DIR"))


def resolve() -> Target:
    if in_job():
        return Target(
            os.environ.get("STACK_CLOUD") or "local",
            Path(os.environ["TRAINING_STATE_DIR"]),
            os.environ["MLFLOW_TRACKING_URI"],
            os.environ["CHECKPOINT_STORAGE"],
            None,
            in_job=True,
            lease_end=os.environ.get("STACK_LEASE_END", ""),
            hardware=os.environ.get("STACK_HARDWARE", ""),
            ui_uri=os.environ.get("STACK_MLFLOW_UI", ""),
        )
    embedded = state_root() / "embedded"
    tracking = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{embedded / 'mlflow.db'}"
    runs = os.environ.get("CHECKPOINT_STORAGE") or str(embedded / "runs")
    artifacts = str(embedded / "mlartifacts") if tracking.startswith("sqlite:") else None
    explicit = os.environ.get("MLFLOW_TRACKING_URI") or os.environ.get("CHECKPOINT_STORAGE")
    up = None if explicit else state.stack_up(state.stack_name())
    if up is None:
        return Target("local", embedded, tracking, runs, artifacts)
    record, endpoints = up
    return Target(
        record.cloud,
        embedded,
        endpoints.mlflow_tracking_uri,
        runs,
        artifacts,
        endpoints,
        lease_end=record.lease.end,
        hardware=record.hardware,
    )
