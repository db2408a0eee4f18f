"""`python -m training tune` (what `make tune` runs) on the embedded default: a real Ray Tune
search with ASHA over the smoke profile, MLflow parent and child runs, best.yaml fed back to
`train`, an interrupted search resumed, and bad space files refused in one line."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow import MlflowClient

from tests.conftest import kill_when, run_cli
from tests.training.test_cli_errors import assert_refused
from training.config import TrainConfig
from training.tasks import TASKS
from training.tune import build_spec

# Small and quick: 10 steps between reports, trials one after the other (both cores each), so
# ASHA sees every trial's results in the same order on every run.
SEARCH_ARGS = ["max_steps=30", "save_steps=10"]


def write_space(folder: Path, samples: int, **extra) -> Path:
    space = {
        "num_samples": samples,
        "metric": "loss",  # never ties, unlike accuracy early on
        "space": {
            "learning_rate": {"loguniform": [1.0e-5, 1.0e-2]},
            "per_device_train_batch_size": {"choice": [16, 32]},
        },
        "scheduler": {"grace_period": 10, "reduction_factor": 2},
        "resources": {"cpus": 2},
        **extra,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def tracking(state: Path) -> MlflowClient:
    uri = f"sqlite:///{state / 'embedded' / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    return MlflowClient(uri)


def search_runs(client: MlflowClient, search_id: str):
    exp = client.get_experiment_by_name("classify")
    parent = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`mlflow.runName` = '{search_id}'"
    )
    assert len(parent) == 1
    children = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent[0].info.run_id}'",
    )
    return parent[0], children


def assert_history_has_no_repeats(client: MlflowClient, run) -> list[int]:
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "eval/loss")]
    assert steps == sorted(set(steps)), steps
    return steps


@pytest.mark.slow
def test_search_stops_trials_early_tracks_them_and_its_best_config_trains(tmp_path):
    state, reports = tmp_path / "state", tmp_path / "reports"
    space = write_space(tmp_path, samples=4)
    result = run_cli(
        state,
        "tune",
        "run_name=search",
        *SEARCH_ARGS,
        TASK="classify",
        SPACE=str(space),
        REPORTS_DIR=str(reports),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Trial status" in result.stdout  # Ray's trial table while it runs
    assert "best trial" in result.stdout and "stopped early" in result.stdout

    client = tracking(state)
    parent, children = search_runs(client, "search")
    assert parent.info.status == "FINISHED"
    assert parent.data.params["num_samples"] == "4"
    assert parent.data.params["space.learning_rate"] == "loguniform(1e-05, 0.01)"
    assert {"best.learning_rate", "best.per_device_train_batch_size", "best.trial_id"} <= set(
        parent.data.params
    )
    assert "best.eval/loss" in parent.data.metrics

    assert len(children) == 4
    outcomes = {c.data.tags["tune.trial_id"]: c.data.tags["tune.outcome"] for c in children}
    early = [c for c in children if c.data.tags["tune.outcome"].startswith("stopped early")]
    assert early, f"ASHA stopped no trial: {outcomes}"
    assert all(c.info.status == "KILLED" for c in early)
    assert "completed" in outcomes.values()
    for child in children:
        steps = assert_history_has_no_repeats(client, child)
        assert steps and steps[0] == 10
        assert child.data.params["learning_rate"] and child.data.tags["task"] == "classify"
    best_child = next(
        c for c in children if c.data.tags["tune.trial_id"] == parent.data.params["best.trial_id"]
    )
    assert best_child.data.metrics["eval/loss"] == pytest.approx(
        parent.data.metrics["best.eval/loss"]
    )

    best_file = reports / "tune" / "search" / "best.yaml"
    best = yaml.safe_load(best_file.read_text())
    assert set(best) <= set(TrainConfig.field_names())
    assert best["task"] == "classify" and best["max_steps"] == 30
    assert best["learning_rate"] == pytest.approx(float(parent.data.params["best.learning_rate"]))

    again = run_cli(state, "train", "run_name=from-best", CONFIG=str(best_file))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    trained = client.search_runs(
        [client.get_experiment_by_name("classify").experiment_id],
        filter_string="tags.`mlflow.runName` = 'from-best'",
    )[0]
    assert trained.info.status == "FINISHED"
    assert float(trained.data.params["learning_rate"]) == pytest.approx(best["learning_rate"])
    assert trained.data.params["per_device_train_batch_size"] == str(
        best["per_device_train_batch_size"]
    )


def terminated_trials(search_dir: Path) -> set[str]:
    """Trials that Tune's own saved state holds as finished (what RESUME reads)."""
    done = set()
    for state_file in glob.glob(str(search_dir / "experiment_state-*.json")):
        try:
            trials = json.loads(Path(state_file).read_text())["trial_data"]
        except (ValueError, OSError):
            continue  # being written
        for meta, _ in trials:
            trial = json.loads(meta)
            if trial["status"] == "TERMINATED":
                done.add(trial["trial_id"])
    return done


def test_interrupted_search_resumes_without_repeating_finished_trials(tmp_path):
    state, reports = tmp_path / "state", tmp_path / "reports"
    space = write_space(tmp_path, samples=3)
    search_dir = state / "embedded" / "runs" / "resumable"
    settings = {"TASK": "classify", "SPACE": str(space), "REPORTS_DIR": str(reports)}
    kill_when(
        state,
        ["tune", "run_name=resumable", *SEARCH_ARGS],
        lambda: terminated_trials(search_dir),
        "finished trial",
        **settings,
    )
    finished = terminated_trials(search_dir)
    assert 0 < len(finished) < 3, "the kill should land mid-search"

    client = tracking(state)
    _, before = search_runs(client, "resumable")
    finished_before = {
        c.data.tags["tune.trial_id"]: (
            c.info.end_time,
            len(assert_history_has_no_repeats(client, c)),
        )
        for c in before
        if c.data.tags["tune.trial_id"] in finished
    }
    results_before = {
        t: len((next(search_dir.glob(f"run_trial_{t}_*")) / "result.json").read_text().splitlines())
        for t in finished
    }

    resumed = run_cli(state, "tune", RESUME="1", **settings)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "continuing search resumable" in resumed.stdout

    parent, children = search_runs(client, "resumable")
    assert parent.info.status == "FINISHED"
    assert len(children) == 3  # a resumed trial continues its own child run
    for child in children:
        assert child.info.status in ("FINISHED", "KILLED")
        steps = assert_history_has_no_repeats(client, child)
        trial_id = child.data.tags["tune.trial_id"]
        if trial_id in finished_before:  # not trained again
            assert (child.info.end_time, len(steps)) == finished_before[trial_id]
    for trial_id, lines in results_before.items():
        result_file = next(search_dir.glob(f"run_trial_{trial_id}_*")) / "result.json"
        assert len(result_file.read_text().splitlines()) == lines
    assert (reports / "tune" / "resumable" / "best.yaml").is_file()

    again = run_cli(state, "tune", RESUME="1", **settings)
    assert again.returncode == 2 and "search 'resumable' already finished" in again.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("space:\n  learnig_rate: {choice: [1]}\n", "unknown setting 'learnig_rate'"),
        ("spaces: {}\n", "unknown key 'spaces'"),
        ("space:\n  optim: {choice: []}\n", "the choice list is empty"),
        (
            "space:\n  learning_rate: {loguniform: [1.0e-3, 1.0e-5]}\n",
            "lower bound 0.001 is above upper bound 1e-05",
        ),
        ("space:\n  optim: {choice: [adamw, lion]}\n", "optim must be one of adamw, sgd"),
        ("space:\n  warmup_steps: {uniform: [0, 10]}\n", "use randint or choice"),
        ("scheduler: {grace: 3}\n", "unknown key scheduler.grace"),
        ("num_samples: 0\n", "num_samples must be at least 1"),
        ("space: [1\n", "is not valid YAML"),
    ],
)
def test_bad_space_files_are_refused_in_one_line(state_dir, tmp_path, content, message):
    space = tmp_path / "space.yaml"
    space.write_text(content)
    result = run_cli(state_dir, "tune", TASK="classify", SPACE=str(space))
    assert_refused(result, state_dir, message)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"SPACE": "/nonexistent.yaml"}, "SPACE=/nonexistent.yaml: no such file"),
        ({"TUNE_SAMPLES": "many"}, "TUNE_SAMPLES must be a number"),
        ({"WORKERS": "2"}, "tuning runs each trial on one worker"),
        ({"RESUME": "1"}, "RESUME=1: there is no earlier classify search"),
    ],
)
def test_bad_tune_settings_are_refused_in_one_line(state_dir, settings, message):
    result = run_cli(state_dir, "tune", TASK="classify", **settings)
    assert_refused(result, state_dir, message)


def test_default_space_is_the_seeds():
    base = TrainConfig(profile="smoke")
    spec = build_spec({}, base, TASKS["classify"], "space")
    assert spec.num_samples == 10
    assert (spec.metric, spec.mode) == ("eval/accuracy", "max")
    shown = {k: d.describe() for k, d in spec.space.items()}
    assert shown == {
        "learning_rate": "loguniform(1e-05, 0.001)",
        "per_device_train_batch_size": "choice(16, 32, 64)",
        "optim": "choice('adamw', 'sgd')",
    }
    summarize = build_spec({"metric": "loss"}, base, TASKS["summarize"], "space", samples="3")
    assert (summarize.metric, summarize.mode, summarize.num_samples) == ("eval/loss", "min", 3)
