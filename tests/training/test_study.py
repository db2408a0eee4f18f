"""`make study`: a small study (classify x ddp,fsdp x 1,2 workers x one batch) killed after its
first cell and continued with RESUME=1 finishes with its report, plots and MLflow runs; a cell's
final metric equals `make train`'s with the same settings and seed; a plan that does not fit
names the cells left out, and its dry run creates nothing; bad input gets one line."""

from __future__ import annotations

import csv
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import kill_when, run_cli
from training.study.cells import Cell, Work
from training.study.estimate import Estimate
from training.study.plan import PlannedCell, StudyPlan, fit

STUDY = "s1"
AXES = {
    "TASKS": "classify",
    "STUDY_STRATEGIES": "ddp,fsdp",
    "STUDY_WORKERS": "1,2",
    "STUDY_BATCH": "16",
    "STUDY_EPOCHS": "1",
    "STUDY_TARGET": "0.3",
    "MAX_TRAIN_SAMPLES": "480",  # short cells: what is tested is the path, not the model
}
CELLS = ["ddp-x1-b16", "ddp-x2-b16", "fsdp-x1-b16", "fsdp-x2-b16"]


def client(state: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{state / 'embedded' / 'mlflow.db'}")


def cell_runs(state: Path) -> dict[str, list]:
    c = client(state)
    runs = c.search_runs([c.get_experiment_by_name("study").experiment_id])
    found: dict[str, list] = {}
    for run in runs:
        found.setdefault(run.info.run_name, []).append(run)
    return found


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The study, SIGKILLed once its first cell has finished, then continued with RESUME=1."""
    root = tmp_path_factory.mktemp("study")
    state, reports = root / "state", root / "reports"
    first = state / "embedded" / "runs" / f"{STUDY}-classify-{CELLS[0]}" / "run.json"

    def first_cell_done() -> bool:
        return first.exists() and json.loads(first.read_text()).get("finished", False)

    settings = {**AXES, "REPORTS_DIR": str(reports)}
    kill_when(state, ["study", f"run_name={STUDY}"], first_cell_done, "first cell", **settings)
    killed = cell_runs(state)
    resumed = run_cli(state, "study", RESUME="1", **settings)
    return state, reports, killed, resumed


@pytest.mark.slow
def test_a_killed_study_resumes_only_its_remaining_cells_and_reports_them_all(study):
    state, reports, killed, resumed = study
    out = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, out[-3000:]
    assert f"continuing study {STUDY}" in out
    # The first cell finished before the kill and is not run again.
    first = f"{STUDY}-classify-{CELLS[0]}"
    assert [r.info.status for r in killed[first]] == ["FINISHED"]
    assert f"cell 1/{len(CELLS) - 1}" in out and "classify ddp x1 b16, estimate" not in out

    runs = cell_runs(state)
    [parent] = runs[STUDY]
    assert parent.info.status == "FINISHED"
    for cell in CELLS:
        [run] = runs[f"{STUDY}-classify-{cell}"]  # one run per cell, the first one kept
        assert run.info.status == "FINISHED", cell
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert {"perf/wall_s", "perf/training_s", "eval/accuracy"} <= set(run.data.metrics)
    assert runs[first][0].info.run_id == killed[first][0].info.run_id

    [folder] = list((reports / "study").iterdir())
    for name in ("results.csv", "results.json", "report.md", "time.png", "speedup.png",
                 "metric.png", "batch.png"):  # fmt: skip
        assert (folder / name).stat().st_size > 0, name
    with open(folder / "results.csv") as f:
        rows = {f"{r['strategy']}-x{r['workers']}-b{r['batch_size']}": r for r in csv.DictReader(f)}
    assert sorted(rows) == sorted(CELLS)
    assert all(r["status"] == "finished" for r in rows.values()), rows
    for strategy in ("ddp", "fsdp"):
        one, two = rows[f"{strategy}-x1-b16"], rows[f"{strategy}-x2-b16"]
        assert float(one["speedup"]) == 1.0
        assert float(two["speedup"]) == pytest.approx(float(one["wall_s"]) / float(two["wall_s"]))
        assert float(two["efficiency"]) == pytest.approx(float(two["speedup"]) / 2)
    # Each cell's estimate stands beside its measured time.
    assert all(float(r["estimate_s"]) > 0 and float(r["wall_s"]) > 0 for r in rows.values())
    # FSDP shards the model state across its two ranks.
    fsdp, ddp = rows["fsdp-x2-b16"], rows["ddp-x2-b16"]
    assert float(fsdp["model_state_bytes_per_rank"]) <= 0.55 * float(
        ddp["model_state_bytes_per_rank"]
    )
    report = (folder / "report.md").read_text()
    assert "## Reading" in report and "DDP vs FSDP" in report and "Batch size" in report
    assert "reached accuracy 0.3 first" in report  # time-to-target
    artifacts = {a.path for a in client(state).list_artifacts(parent.info.run_id, "report")}
    assert "report/report.md" in artifacts


@pytest.mark.slow
def test_a_cell_ends_where_make_train_with_its_settings_ends(study):
    state = study[0]
    trained = run_cli(
        state, "train", TASK="classify", STRATEGY="ddp", WORKERS="1",
        PER_DEVICE_TRAIN_BATCH_SIZE="16", NUM_TRAIN_EPOCHS="1", MAX_TRAIN_SAMPLES="480",
        RUN_NAME="same",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    c = client(state)
    [train] = c.search_runs(
        [c.get_experiment_by_name("classify").experiment_id], "tags.`mlflow.runName` = 'same'"
    )
    [cell] = cell_runs(state)[f"{STUDY}-classify-{CELLS[0]}"]
    for metric in ("eval/loss", "eval/accuracy", "eval/f1_macro"):
        assert cell.data.metrics[metric] == pytest.approx(train.data.metrics[metric], rel=1e-6)


@pytest.mark.slow
def test_a_plan_that_does_not_fit_names_the_cells_left_out_and_its_dry_run_makes_nothing(study):
    state, reports = study[0], study[1]
    before = {name: len(runs) for name, runs in cell_runs(state).items()}
    planned = run_cli(
        state, "study", DRY_RUN="1", RUN_NAME="s2", STUDY_HOURS="0.001",
        REPORTS_DIR=str(reports), **AXES,
    )  # fmt: skip
    out = " ".join(planned.stdout.split())
    assert planned.returncode == 0, out[-3000:] + planned.stderr[-3000:]
    assert "budget: 4 s (STUDY_HOURS=0.001)" in out, out
    for cell in ("ddp x1 b16", "ddp x2 b16", "fsdp x1 b16", "fsdp x2 b16"):
        assert f"left out: classify {cell} (about" in out, out
        # Estimated from the finished cell of the same settings on this machine.
        assert f"(run {STUDY}-classify-{cell.replace(' ', '-')}), left out" in out, out
    assert {name: len(runs) for name, runs in cell_runs(state).items()} == before
    assert not (state / "embedded" / "runs" / "s2").exists()
    assert len(list((reports / "study").iterdir())) == 1


def planned(seconds: list[float]) -> StudyPlan:
    from training.settings import StudySettings
    from training.targets import Target

    settings = StudySettings(["classify"], ["ddp"], [1], [8], 1, 0, "weak", {}, 0.0, False)
    end = (datetime(2026, 12, 2, 12, 0, tzinfo=UTC) + timedelta(minutes=33)).isoformat()
    target = Target("chameleon", Path("/nonexistent"), "sqlite:///x", "", None, lease_end=end)
    cells = [
        PlannedCell(
            Cell("classify", "ddp", 1, 8 * (i + 1), 1), None, Work(1, 1, 1), Estimate(s, "probe")
        )  # fmt: skip
        for i, s in enumerate(seconds)
    ]
    return StudyPlan("x", target, settings, {}, cells, None)


def test_cells_past_the_lease_end_minus_the_guard_are_left_out_in_order():
    # 33 min left minus the 30 min guard: 180 s for cells of 100, 100 and 60 s.
    p = planned([100.0, 100.0, 60.0])
    seconds, why = fit(p, now=datetime(2026, 12, 2, 12, 0, tzinfo=UTC))
    assert seconds == 180 and "checkpoint guard" in why
    assert [c.fits for c in p.cells] == [True, False, True]  # a later, shorter cell still fits
    p.settings.past_end = True
    fit(p, now=datetime(2026, 12, 2, 12, 0, tzinfo=UTC))
    assert all(c.fits for c in p.cells)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"TASKS": "classify,translate"}, "TASKS: 'translate' is not one of classify, fakenews"),
        ({"STUDY_BATCH": " , "}, "STUDY_BATCH is empty; give a comma-separated list"),
        ({"STUDY_EPOCHS": "0"}, "STUDY_EPOCHS must be at least 1, got 0"),
        ({"STUDY_HOURS": "0"}, "STUDY_HOURS must be above 0, got 0"),
        ({"STUDY_TARGET": "1.5"}, "STUDY_TARGET=1.5 is outside the range of classify's accuracy"),
        ({"STRATEGY": "fsdp"}, "strategy is one of the study's axes; set it with STUDY_STRATEGIES"),
        (
            {"STUDY_WORKERS": f"1,{(os.cpu_count() or 1) + 1}"},
            f"STUDY_WORKERS asks for {(os.cpu_count() or 1) + 1} workers; this machine can place",
        ),
    ],
)
def test_bad_input_gets_one_line(tmp_path, settings, message):
    state, reports = tmp_path / "state", tmp_path / "reports"
    result = run_cli(state, "study", REPORTS_DIR=str(reports), **{"TASKS": "classify", **settings})
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), result.stderr
    assert not state.exists() and not reports.exists()
