"""DDP and FSDP on 2 CPU workers (gloo) inside the project's loop on Ray Train."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import kill_after_first_checkpoint, run_cli, save_smoke_model
from training.tasks import TASKS

pytestmark = pytest.mark.slow
STEPS = 40


@pytest.fixture(scope="module")
def state(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("dist") / "state"


@pytest.fixture(scope="module")
def model_without_dropout(tmp_path_factory) -> str:
    """A tiny classifier with dropout off, so runs on different worker counts are comparable."""
    task = TASKS["classify"]
    folder = tmp_path_factory.mktemp("model")
    save_smoke_model(task, task.generate(1200, 42), 42, list(task.labels), folder)
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text())
    config.update(dropout=0.0, attention_dropout=0.0, seq_classif_dropout=0.0)
    config_file.write_text(json.dumps(config))
    return str(folder)


def losses(state: Path, run_name: str) -> list[float]:
    client = MlflowClient(f"sqlite:///{state / 'embedded' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("classify")
    run = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`mlflow.runName` = '{run_name}'"
    )[0]
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == list(range(1, STEPS + 1))
    return [m.value for m in history]


def train(state: Path, model: str, run_name: str, workers: int, strategy: str, batch: int):
    result = run_cli(
        state,
        "train",
        f"run_name={run_name}",
        f"max_steps={STEPS}",
        "logging_steps=1",
        f"per_device_train_batch_size={batch}",
        TASK="classify",
        MODEL=model,
        WORKERS=str(workers),
        STRATEGY=strategy,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return losses(state, run_name)


def assert_same_trajectory(one: list[float], other: list[float]) -> None:
    worst = max(abs(a - b) for a, b in zip(one, other, strict=True))
    assert worst < 2e-3, f"loss trajectories differ by up to {worst:.2e}"


@pytest.fixture(scope="module")
def reference(state, model_without_dropout) -> list[float]:
    """One worker, global batch 16."""
    return train(state, model_without_dropout, "one-worker", 1, "ddp", 16)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_workers_follow_the_one_worker_trajectory(
    state, model_without_dropout, reference, strategy
):
    two = train(state, model_without_dropout, f"two-{strategy}", 2, strategy, 8)
    assert reference[-1] < reference[0]  # it learns
    assert_same_trajectory(reference, two)


def test_fsdp_resumes_on_a_different_worker_count(state, model_without_dropout, reference):
    killed_at = kill_after_first_checkpoint(
        state,
        "fsdp-resumed",
        [f"max_steps={STEPS}", "logging_steps=1", "save_steps=5", "per_device_train_batch_size=8"],
        TASK="classify",
        MODEL=model_without_dropout,
        WORKERS="2",
        STRATEGY="fsdp",
    )
    assert 0 < killed_at < STEPS
    # Same global batch (1 x 16 instead of 2 x 8): the resharded checkpoint continues the run.
    result = run_cli(
        state,
        "train",
        "run_name=fsdp-resumed",
        "per_device_train_batch_size=16",
        TASK="classify",
        WORKERS="1",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert_same_trajectory(reference, losses(state, "fsdp-resumed"))


def test_fsdp_summarize_evaluates_uneven_shards_without_hanging(state):
    # 7 validation rows on 2 ranks, 2 per batch: the ranks hold 4 and 3 rows, and generation
    # runs a different number of decoding steps on each; sharded forwards must still line up.
    result = run_cli(
        state,
        "train",
        "run_name=fsdp-summarize",
        "max_steps=6",
        "max_eval_samples=7",
        "per_device_eval_batch_size=2",
        TASK="summarize",
        WORKERS="2",
        STRATEGY="fsdp",
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{state / 'embedded' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("summarize")
    [run] = client.search_runs(
        [exp.experiment_id], filter_string="tags.`mlflow.runName` = 'fsdp-summarize'"
    )
    assert {"eval/loss", "eval/rouge1", "eval/rougeLsum"} <= set(run.data.metrics)
