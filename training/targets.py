"""Where a run tracks and stores: environment overrides, else the embedded default.

Embedded default (no stack up): an in-process Ray cluster, MLflow's own SQLite store and local
checkpoints, all under the repo's state folder `.stack/embedded/` (git-ignored)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Target:
    name: str  # "local", "sim" or "chameleon"
    state_dir: Path
    tracking_uri: str
    runs_root: str  # Ray storage path: a local folder or s3://bucket/prefix
    artifact_root: str | None  # where a new MLflow experiment keeps artifacts (embedded only)

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


def reports_root() -> Path:
    """Where bench and tune reports go: `reports/` in the repo, or REPORTS_DIR."""
    return Path(os.environ.get("REPORTS_DIR") or REPO_ROOT / "reports").resolve()


def state_root() -> Path:
    return Path(os.environ.get("STACK_DIR") or REPO_ROOT / ".stack").resolve()


def resolve() -> Target:
    state = state_root() / "embedded"
    tracking = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{state / 'mlflow.db'}"
    runs = os.environ.get("CHECKPOINT_STORAGE") or str(state / "runs")
    artifacts = str(state / "mlartifacts") if tracking.startswith("sqlite:") else None
    return Target("local", state, tracking, runs, artifacts)
