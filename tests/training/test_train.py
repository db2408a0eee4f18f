"""End to end, as a user runs it: `python -m training train` (what `make train` calls) on the
embedded default: in-process Ray, MLflow's SQLite store, local checkpoints, no network."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from tests.conftest import (
    REPO,
    cli_env,
    kill_after_first_checkpoint,
    run_cli,
    save_smoke_model,
    session_processes,
)
from training.config import TrainConfig
from training.tasks import TASKS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def state(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("train") / "state"


def tracking(state: Path) -> MlflowClient:
    uri = f"sqlite:///{state / 'embedded' / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(uri)


def only_run(client: MlflowClient, experiment: str, run_name: str):
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`mlflow.runName` = '{run_name}'"
    )
    assert len(runs) == 1
    return runs[0]


def latest_version(client: MlflowClient, name: str):
    versions = client.search_model_versions(f"name = '{name}'")
    return max(versions, key=lambda v: int(v.version))


def train(state: Path, run_name: str, *args: str, **settings: str):
    """`make train` as a user runs it, through a pipe and in a session of its own: it succeeds,
    all its output arrives, ending with where the time went, and no process of it stays (the
    embedded Ray cluster goes with it)."""
    env = cli_env(state, **settings)
    env.pop("PYTHONUNBUFFERED")  # a pipe buffers: what the run printed must still arrive
    proc = subprocess.Popen(
        [sys.executable, "-m", "training", "train", f"run_name={run_name}", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    assert stdout.splitlines()[-1].startswith("time: start-up "), stdout[-3000:]
    deadline = time.monotonic() + 10
    while session_processes(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not session_processes(proc.pid), "the run left processes behind"
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def held_out_accuracy(task_name: str, version: int) -> float:
    task = TASKS[task_name]
    held_out = task.generate(300, seed=20261128)  # a seed no run trains on
    model = mlflow.pyfunc.load_model(f"models:/{task_name}/{version}")
    predicted = model.predict(held_out[["text"]])
    return float((predicted["label"] == held_out["label"]).mean())


@pytest.mark.parametrize(
    ("task_name", "metrics", "floor"),
    [
        ("classify", {"eval/accuracy", "eval/f1_macro"}, 0.6),  # chance: 0.25
        ("fakenews", {"eval/accuracy", "eval/f1", "eval/roc_auc"}, 0.75),  # chance: 0.5
    ],
)
def test_classifiers_train_log_register_and_beat_chance(state, task_name, metrics, floor):
    result = train(state, f"{task_name}-e2e", TASK=task_name)
    assert "eval/accuracy" in result.stdout  # the final table
    assert "MLflow run" in result.stdout

    client = tracking(state)
    run = only_run(client, task_name, f"{task_name}-e2e")
    assert run.info.status == "FINISHED"
    assert metrics | {"train/loss", "eval/loss"} <= set(run.data.metrics)
    train_loss = client.get_metric_history(run.info.run_id, "train/loss")
    assert len(train_loss) > 10 and train_loss[-1].value < train_loss[0].value
    assert run.data.params["learning_rate"] and run.data.params["seed"] == "42"
    assert set(run.data.params) == set(TrainConfig.field_names())  # the whole resolved config
    assert {"task", "profile", "strategy", "git_commit"} <= set(run.data.tags)
    assert run.data.tags["profile"] == "smoke"
    contexts = {d.tags[0].value for d in run.inputs.dataset_inputs}
    assert contexts == {"training", "validation"}

    version = latest_version(client, task_name)
    assert version.run_id == run.info.run_id
    assert held_out_accuracy(task_name, int(version.version)) > floor


def test_summarize_trains_scores_rouge_and_summarizes(state):
    train(state, "summarize-e2e", TASK="summarize")
    client = tracking(state)
    run = only_run(client, "summarize", "summarize-e2e")
    rouge = {"eval/rouge1", "eval/rouge2", "eval/rougeL", "eval/rougeLsum"}
    assert rouge | {"train/loss", "eval/loss"} <= set(run.data.metrics)
    assert run.data.metrics["eval/rouge1"] > 0.1  # the lead sentence is learnable
    version = latest_version(client, "summarize")
    model = mlflow.pyfunc.load_model(f"models:/summarize/{version.version}")
    articles = TASKS["summarize"].generate(3, seed=5)
    summaries = model.predict(articles[["article"]])["summary"]
    assert len(summaries) == 3 and all(isinstance(s, str) and s for s in summaries)


def test_users_own_data_file_and_model_folder(state, tmp_path):
    task = TASKS["classify"]
    frame = task.generate(400, seed=3).rename(columns={"text": "content", "label": "category"})
    frame["category"] = frame["category"].str.lower()  # label names in any case
    data = tmp_path / "my-news.jsonl"
    frame.to_json(data, orient="records", lines=True)
    tiny = frame.rename(columns={"content": "text"})
    model = save_smoke_model(task, tiny, 1, list(task.labels), tmp_path / "model")

    train(state, "own-data", "max_steps=20", TASK="classify", DATA=str(data), MODEL=str(model))
    run = only_run(tracking(state), "classify", "own-data")
    assert run.info.status == "FINISHED"
    assert str(tmp_path / "model") in run.data.tags["model_source"]
    assert str(data) in run.data.tags["data_source"]
    manifest = json.loads((state / "embedded" / "runs" / "own-data" / "run.json").read_text())[
        "manifest"
    ]
    assert manifest["train"]["rows"] + manifest["validation"]["rows"] == 400


def test_killed_run_resumes_from_its_checkpoint_without_gaps_or_repeats(state):
    killed_at = kill_after_first_checkpoint(
        state, "resumable", ["max_steps=200", "save_steps=20", "logging_steps=5"], TASK="fakenews"
    )
    assert 0 < killed_at < 200, "the kill should land mid-run"

    train_result = run_cli(state, "train", RESUME="1", TASK="fakenews")
    assert train_result.returncode == 0, train_result.stdout[-3000:] + train_result.stderr[-3000:]
    assert "continuing run resumable" in train_result.stdout

    client = tracking(state)
    run = only_run(client, "fakenews", "resumable")
    assert run.info.status == "FINISHED"
    assert run.data.tags["resumed_from_step"] == str(killed_at)
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert steps == list(range(5, 201, 5))  # no gap, no repeat
    assert run.data.metrics["eval/accuracy"] > 0.75

    again = run_cli(state, "train", RESUME="1", TASK="fakenews")
    assert again.returncode == 2 and "run 'resumable' already finished" in again.stderr


def test_ctrl_c_marks_the_run_killed_and_says_how_to_continue(state):
    # Its own process group, which gets the SIGINT a terminal's Ctrl-C would send.
    proc = subprocess.Popen(
        [sys.executable, "-m", "training", "train", "run_name=interrupted", "max_steps=100000"],
        cwd=REPO,
        env=cli_env(state, TASK="classify"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    snapshot = state / "embedded" / "runs" / "interrupted" / "checkpoint_manager_snapshot.json"
    deadline = time.monotonic() + 300
    while not snapshot.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, out[-2000:] + err[-2000:]
    assert "continue with `make train TASK=classify RUN_NAME=interrupted`" in out
    assert "Traceback" not in err
    assert only_run(tracking(state), "classify", "interrupted").info.status == "KILLED"
