"""Every bad input ends in one clear line on stderr, exit code 2, and nothing written."""

from __future__ import annotations

import pytest

from tests.conftest import run_cli


def assert_refused(result, state_dir, message: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [lines[0]] and lines[0].startswith("error: "), result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    written = list(state_dir.rglob("*")) if state_dir.exists() else []
    assert written == [], f"a refused run left state behind: {written}"


@pytest.mark.parametrize(
    ("settings", "args", "message"),
    [
        ({"TASK": "translate"}, [], "unknown TASK 'translate'; choose one of: classify"),
        ({"PROFILE": "huge"}, [], "unknown PROFILE 'huge'"),
        ({"LEARNING_RATE": "fast"}, [], "learning_rate must be a number, got 'fast'"),
        ({"WORKERS": "0"}, [], "workers must be at least 1"),
        ({}, ["max_steps=-5"], "max_steps must be -1 (off) or above 0"),
        ({}, ["learnig_rate=0.1"], "unknown setting learnig_rate"),
        ({"DATA": "/nonexistent/news.jsonl"}, [], "no such file"),
        ({"MODEL": "/nonexistent/model"}, [], "is not a model folder"),
        ({"PROFILE": "local"}, [], "cannot reach the Hugging Face hub"),
        ({"MODEL": "distilbert-base-uncased"}, [], "cannot reach the Hugging Face hub"),
        ({"RESUME": "1"}, [], "RESUME=1: there is no earlier classify run"),
        ({"PRECISION": "fp16"}, [], "precision=fp16 needs a GPU"),
        ({"CONFIG": "/nonexistent.yaml"}, [], "CONFIG=/nonexistent.yaml: no such file"),
        ({}, ["per_device_train_batch_size=4096"], "fewer than gradient_accumulation_steps"),
    ],
)
def test_bad_input_is_refused_cleanly(state_dir, settings, args, message):
    assert_refused(run_cli(state_dir, "train", *args, **settings), state_dir, message)


def test_bad_data_files_are_refused_cleanly(state_dir, tmp_path):
    cases = {
        "empty.jsonl": ("", "holds no rows"),
        "nolabel.jsonl": ('{"text": "a b"}\n' * 10, "no target column"),
        "blank.csv": ("text,label\n,World\n,Sports\n", "column 'text' is empty"),
        "labels.jsonl": ('{"text": "a", "label": "Weather"}\n' * 10, "labels not in the task"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_text(content)
        assert_refused(run_cli(state_dir, "train", DATA=str(path)), state_dir, message)


def test_bad_config_file_is_refused_cleanly(state_dir, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("learning_rate: [1\n")
    assert_refused(run_cli(state_dir, "train", CONFIG=str(path)), state_dir, "is not valid YAML")


def test_a_run_whose_cluster_cannot_start_leaves_no_run_behind(state_dir, monkeypatch):
    """MLflow's run is made while Ray starts; when Ray does not start, that run is deleted
    again and the run's folder removed: nothing half-made stays."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    from core.errors import UserError
    from training import cluster, runner, targets

    monkeypatch.setenv("STACK_DIR", str(state_dir))
    target = targets.resolve()
    cfg = runner.resolve_config([{"task": "classify"}], target)
    plan = runner.plan(cfg, {}, target)

    def no_room(*args, **kwargs):
        raise UserError("2 workers need 2 GPUs (one per worker); this machine has 1")

    monkeypatch.setattr(cluster, "start", no_room)
    with pytest.raises(UserError, match="need 2 GPUs"):
        runner.run(plan)

    client = MlflowClient(target.tracking_uri)
    experiment = client.get_experiment_by_name("classify")
    made = client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL)
    assert len(made) == 1, "the run was made beside Ray's start"
    assert client.search_runs([experiment.experiment_id]) == []  # and deleted again
    assert not target.run_folder(plan.run_name).exists()
