"""MLflow: the run, its params and tags, metrics written exactly once, the model.

Metrics are buffered by rank 0 and written to MLflow right after each checkpoint is saved; the
unwritten buffer travels inside the checkpoint. A run resumed from a checkpoint writes only
the points MLflow does not hold yet, so its history has neither gaps nor repeats."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from core.errors import UserError
from core.paths import REPO_ROOT


def client(tracking_uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def provenance_tags() -> dict[str, str]:
    """Which code made a run, and which Ray job on a stack ran it (training/jobs.py sets
    both variables: the job's copy of the working tree has no .git)."""
    tags = {"git_commit": os.environ.get("TRAINING_GIT_COMMIT") or git_commit()}
    if os.environ.get("TRAINING_JOB_ID"):
        tags["ray_job_id"] = os.environ["TRAINING_JOB_ID"]
    return tags


def git_commit() -> str:
    """The repository's HEAD, with -dirty when there are local changes; else "unknown"."""

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=False
        )

    try:
        head, status = git("rev-parse", "HEAD"), git("status", "--porcelain")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if head.returncode != 0:
        return "unknown"
    return head.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


def experiment_id(tracking_uri: str, name: str, artifact_root: str | None = None) -> str:
    """The task's experiment, made on first use (artifacts under `artifact_root` if given)."""
    mlflow_client = client(tracking_uri)
    try:
        experiment = mlflow_client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        location = f"{artifact_root}/{name}" if artifact_root else None
        return mlflow_client.create_experiment(name, artifact_location=location)
    except Exception as exc:  # network, auth, bad URI
        raise UserError(
            f"cannot reach MLflow at {tracking_uri} ({str(exc).splitlines()[0]}); "
            "check that the tracking server is up (make status)"
        ) from None


def start_run(p, experiment_id: str) -> str:
    """A new MLflow run: tags, the whole config as params, the data as dataset inputs."""
    import mlflow

    mlflow_client = client(p.target.tracking_uri)
    run = mlflow_client.create_run(
        experiment_id,
        run_name=p.run_name,
        tags={
            "task": p.task.name,
            "profile": p.cfg.profile,
            "strategy": p.cfg.strategy,
            "workers": str(p.cfg.workers),
            **provenance_tags(),
            "model_source": p.source.describe() if p.source else "model built from config (smoke)",
            "data_source": p.splits.source,
        },
    )
    run_id = run.info.run_id
    mlflow.set_tracking_uri(p.target.tracking_uri)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_params({k: str(v) for k, v in p.cfg.to_dict().items()})
        target = p.task.target_column
        for context, frame in (("training", p.splits.train), ("validation", p.splits.validation)):
            dataset = mlflow.data.from_pandas(
                frame,
                name=f"{p.task.name}-{context}",
                targets=target,
                digest=p.splits.manifest["train" if context == "training" else "validation"][
                    "sha256"
                ][:16],
            )
            mlflow.log_input(dataset, context=context)
        mlflow.log_dict(p.splits.manifest, "data/manifest.json")
    return run_id


def log_model(p, run_id: str, model_dir: Path) -> str:
    """Log the fine-tuned model as a pyfunc and register it; returns "<name> version <n>"."""
    import mlflow
    import torch
    import transformers
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from training import serving

    task = p.task
    meta = {
        "kind": task.kind,
        "text_column": task.text_column,
        "max_seq_length": p.cfg.max_seq_length or task.max_seq_length,
    }
    if task.kind == "seq2seq":
        meta["generation"] = task.generation_kwargs(p.cfg)
        outputs = Schema([ColSpec("string", "summary")])
    else:
        outputs = Schema([ColSpec("string", "label"), ColSpec("double", "score")])
    meta_file = model_dir.parent / "task.json"
    meta_file.write_text(json.dumps(meta))
    name = p.cfg.registered_model_name or task.name

    mlflow.set_tracking_uri(p.target.tracking_uri)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=serving.__file__,
            artifacts={"hf_model": str(model_dir), "task": str(meta_file)},
            signature=ModelSignature(Schema([ColSpec("string", task.text_column)]), outputs),
            pip_requirements=[
                f"torch=={torch.__version__.split('+')[0]}",
                f"transformers=={transformers.__version__}",
                f"mlflow=={mlflow.__version__}",
                "pandas",
            ],
            registered_model_name=name,
        )
    return f"{name} version {info.registered_model_version}"


class MetricBuffer:
    """Rank 0's metric points since the last checkpoint."""

    def __init__(self, tracking_uri: str, run_id: str, pending: list | None = None):
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.pending: list[tuple[str, float, int, int]] = [tuple(p) for p in pending or []]

    def add(self, metrics: dict[str, float], step: int) -> None:
        stamp = int(time.time() * 1000)
        self.pending.extend((key, float(value), stamp, step) for key, value in metrics.items())

    def flush(self) -> None:
        """Write pending points that MLflow does not hold yet (safe to call again)."""
        if not self.pending:
            return
        from mlflow.entities import Metric

        mlflow_client = client(self.tracking_uri)
        last_step: dict[str, int] = {}
        for key in {p[0] for p in self.pending}:
            history = mlflow_client.get_metric_history(self.run_id, key)
            last_step[key] = max((m.step for m in history), default=-1)
        fresh = [Metric(k, v, t, s) for k, v, t, s in self.pending if s > last_step[k]]
        for start in range(0, len(fresh), 1000):  # MLflow's batch limit
            mlflow_client.log_batch(self.run_id, metrics=fresh[start : start + 1000])
        self.pending = []


def environment_for_workers(tracking_uri: str) -> dict[str, str]:
    """What a worker needs to reach the tracking server (credentials stay in env, not config)."""
    env = {"MLFLOW_TRACKING_URI": tracking_uri}
    for key in (
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
        "MLFLOW_S3_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ):
        if os.environ.get(key):
            env[key] = os.environ[key]
    return env
