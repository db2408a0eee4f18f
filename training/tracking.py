"""MLflow: the run, its params and tags, metrics written exactly once, the model.

Metrics are buffered by rank 0 and written to MLflow right after each checkpoint is saved; the
unwritten buffer travels inside the checkpoint. A run resumed from a checkpoint writes only
the points MLflow does not hold yet, so its history has neither gaps nor repeats."""

from __future__ import annotations

import json
import os
import subprocess
import time
from concurrent.futures import Future
from pathlib import Path

from core.errors import UserError
from core.paths import REPO_ROOT
from training.config import input_length


def provenance_tags() -> dict[str, str]:
    """Which code made a run, and which Ray job on a stack ran it (training/jobs.py sets
    both variables: the job's copy of the working tree has no .git)."""
    tags = {"git_commit": os.environ.get("TRAINING_GIT_COMMIT") or git_commit()}
    if os.environ.get("TRAINING_JOB_ID"):
        tags["ray_job_id"] = os.environ["TRAINING_JOB_ID"]
    return tags


def run_tags(task: str, profile: str, **more) -> dict[str, str]:
    """The tags of every run this package makes in MLflow (a run, a search and its trials, a
    bench or study and its cells): what it trained, which code made it, where it ran, and
    `more` (empty values left out)."""
    tags = {"task": task, "profile": profile}
    tags.update({key: str(value) for key, value in more.items() if value not in (None, "")})
    return {**tags, **provenance_tags()}


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


class Tracker:
    """MLflow for one tracking URI, through a client bound to it: runs, their params, tags,
    datasets and outcome, reports and the model. Nothing here sets MLflow's global URI but
    `log_model`, whose pyfunc API has no client form."""

    def __init__(self, uri: str):
        from mlflow import MlflowClient

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)

    def experiment(self, name: str, artifact_root: str | None = None) -> str:
        """The experiment's id, made on first use (artifacts under `artifact_root` if given)."""
        try:
            experiment = self.client.get_experiment_by_name(name)
            if experiment is not None:
                return experiment.experiment_id
            location = f"{artifact_root}/{name}" if artifact_root else None
            return self.client.create_experiment(name, artifact_location=location)
        except Exception as exc:  # network, auth, bad URI
            raise UserError(
                f"cannot reach MLflow at {self.uri} ({str(exc).splitlines()[0]}); "
                "check that the tracking server is up (make status)"
            ) from None

    def start_run(
        self,
        experiment_id: str,
        name: str,
        tags: dict[str, str],
        params: dict | None = None,
        parent: str | None = None,
        datasets: list | None = None,
        documents: dict[str, dict] | None = None,
    ) -> str:
        """A new run: tags, params, dataset inputs (see `dataset`) and JSON documents."""
        if parent:
            tags = {**tags, "mlflow.parentRunId": parent}
        run_id = self.client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
        if params:
            self.log_params(run_id, params)
        if datasets:
            self.client.log_inputs(run_id, datasets=datasets)
        for path, content in (documents or {}).items():
            self.client.log_dict(run_id, content, path)
        return run_id

    def log_params(self, run_id: str, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow's batch limit for params
            self.client.log_batch(run_id, params=items[start : start + 100])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        points = [Metric(k, float(v), stamp, step) for k, v in metrics.items()]
        self.client.log_batch(run_id, metrics=points)

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(run_id, key, str(value))

    def running(self, run_id: str) -> None:
        self.client.update_run(run_id, status="RUNNING")

    def finish(self, run_id: str, outcome: str, tags: dict[str, str] | None = None) -> None:
        """End a run as FINISHED, FAILED or KILLED."""
        self.set_tags(run_id, tags or {})
        self.client.set_terminated(run_id, status=outcome)

    def delete(self, run_id: str) -> None:
        """Move a run to MLflow's trash (a run made for a start that failed)."""
        self.client.delete_run(run_id)

    def children(self, experiment_id: str, parent: str, **tags: str) -> list:
        query = f"tags.`mlflow.parentRunId` = '{parent}'"
        for key, value in tags.items():
            query += f" and tags.`{key}` = '{value}'"
        return self.client.search_runs([experiment_id], filter_string=query)

    def log_report(self, run_id: str, path: Path, artifact_path: str) -> None:
        """A report file or folder as the run's artifacts under `artifact_path`."""
        if path.is_dir():
            self.client.log_artifacts(run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(run_id, str(path), artifact_path)

    def log_model(self, run_id: str, model_dir: Path, task, cfg) -> str:
        """Log the fine-tuned model as a pyfunc and register it; returns "<name> version <n>"."""
        import mlflow
        import torch
        import transformers
        from mlflow.models import ModelSignature
        from mlflow.types import ColSpec, Schema

        from training import serving

        meta = {
            "kind": task.kind,
            "text_column": task.text_column,
            "max_seq_length": input_length(cfg, task),
        }
        if task.kind == "seq2seq":
            meta["generation"] = task.generation_kwargs(cfg)
            outputs = Schema([ColSpec("string", "summary")])
        else:
            outputs = Schema([ColSpec("string", "label"), ColSpec("double", "score")])
        meta_file = model_dir.parent / "task.json"
        meta_file.write_text(json.dumps(meta))
        name = cfg.registered_model_name or task.name

        mlflow.set_tracking_uri(self.uri)
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


def dataset(frame, name: str, targets: str, digest: str, context: str):
    """A pandas frame as an MLflow dataset input of the given context (training, validation)."""
    import mlflow.data
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    entity = mlflow.data.from_pandas(frame, name=name, targets=targets, digest=digest)
    return DatasetInput(
        entity._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)]
    )


# How long a flush keeps trying an unreachable MLflow before the run stops at its checkpoint
# (the points it could not write stay in that checkpoint; RESUME=1 writes them).
RETRY_WINDOW_S = float(os.environ.get("TRACKING_RETRY_S") or 60)
RETRY_PAUSE_S = 2.0


class TrackingUnreachable(Exception):
    """MLflow did not answer within the retry window; the run stopped at a checkpoint."""

    MARK = "MLflow did not answer"


class _OneTry:
    """MLflow's client without its own retries (minutes of backoff per call when the server
    is gone): the flush's retry window bounds the wait instead."""

    def __enter__(self) -> None:
        self.saved = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"

    def __exit__(self, *exc) -> None:
        if self.saved is None:
            os.environ.pop("MLFLOW_HTTP_REQUEST_MAX_RETRIES", None)
        else:
            os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = self.saved


class MetricBuffer:
    """Rank 0's metric points since the last checkpoint."""

    def __init__(self, tracker: Tracker | Future | None, run_id: str, pending: list | None = None):
        self._tracker = tracker  # a Tracker, or a Future of one (None on ranks that never write)
        self.run_id = run_id
        self.pending: list[tuple[str, float, int, int]] = [tuple(p) for p in pending or []]

    @property
    def tracker(self) -> Tracker:
        if isinstance(self._tracker, Future):
            self._tracker = self._tracker.result()
        return self._tracker

    def add(self, metrics: dict[str, float], step: int) -> None:
        stamp = int(time.time() * 1000)
        self.pending.extend((key, float(value), stamp, step) for key, value in metrics.items())

    def flush(self, window_s: float | None = None) -> None:
        """Write pending points that MLflow does not hold yet (safe to call again), retrying
        an unreachable MLflow for `window_s`; then TrackingUnreachable (the points are kept)."""
        if not self.pending:
            return
        window_s = RETRY_WINDOW_S if window_s is None else window_s
        deadline = time.monotonic() + window_s
        while True:
            try:
                with _OneTry():
                    return self._write()
            except Exception as exc:  # connection refused, timeouts, 5xx: all "not answering"
                if time.monotonic() + RETRY_PAUSE_S > deadline:
                    step = max(p[3] for p in self.pending)
                    raise TrackingUnreachable(
                        f"{TrackingUnreachable.MARK} for {window_s:.0f} s at "
                        f"{self.tracker.uri} ({type(exc).__name__}); stopped at the checkpoint "
                        f"of step {step}"
                    ) from None
                time.sleep(RETRY_PAUSE_S)

    def _write(self) -> None:
        from mlflow.entities import Metric

        mlflow_client = self.tracker.client
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
