"""`make bench`: the scaling arithmetic, failed cells, bad axes, and a real small matrix."""

from __future__ import annotations

import csv
import json
import math

import pytest
from mlflow import MlflowClient

from tests.conftest import run_cli
from training.bench import Cell, add_scaling, run_matrix
from training.bench.report import COLUMNS


def recorded(strategy: str, workers: int, batch: int, samples_per_s: float) -> dict:
    return {
        "strategy": strategy,
        "workers": workers,
        "batch_size": batch,
        "samples_per_s": samples_per_s,
        "status": "ok",
    }


def test_speedup_and_efficiency_come_from_the_measured_throughput():
    rows = add_scaling(
        [
            recorded("ddp", 1, 8, 100.0),
            recorded("ddp", 2, 8, 180.0),
            recorded("ddp", 4, 8, 300.0),
            recorded("fsdp", 1, 8, 80.0),
            recorded("fsdp", 2, 8, 100.0),
            recorded("ddp", 2, 16, 500.0),  # no 1-worker cell for batch 16: nothing to compare
        ]
    )
    got = {
        (r["strategy"], r["workers"], r["batch_size"]): (r["speedup"], r["efficiency"])
        for r in rows
    }
    assert got[("ddp", 1, 8)] == (1.0, 1.0)
    assert got[("ddp", 2, 8)] == pytest.approx((1.8, 0.9))
    assert got[("ddp", 4, 8)] == pytest.approx((3.0, 0.75))
    assert got[("fsdp", 2, 8)] == pytest.approx((1.25, 0.625))
    assert all(math.isnan(v) for v in got[("ddp", 2, 16)])


def test_a_failed_cell_is_recorded_and_the_matrix_goes_on():
    cells = [Cell("ddp", 1, 8), Cell("fsdp", 1, 8), Cell("ddp", 2, 8)]

    def run_cell(cell: Cell) -> dict:
        if cell.strategy == "fsdp":
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return {"samples_per_s": 100.0 * cell.workers}

    rows = run_matrix(cells, run_cell, "classify", 5)
    assert [r["status"] for r in rows] == ["ok", "failed", "ok"]
    assert "out of memory" in rows[1]["error"]
    assert rows[2]["speedup"] == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"BENCH_STRATEGIES": "ddp,zero3"}, "BENCH_STRATEGIES: 'zero3' is not one of ddp, fsdp"),
        ({"BENCH_WORKERS": "0"}, "BENCH_WORKERS: values must be 1 or more"),
        ({"BENCH_BATCH": "eight"}, "BENCH_BATCH='eight': 'eight' is not valid"),
    ],
)
def test_bad_axes_are_refused_cleanly(tmp_path, settings, message):
    result = run_cli(tmp_path / "state", "bench", REPORTS_DIR=str(tmp_path / "reports"), **settings)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "reports").exists()


@pytest.mark.slow
def test_bench_writes_results_report_plots_and_mlflow_runs(tmp_path):
    state, reports = tmp_path / "state", tmp_path / "reports"
    result = run_cli(
        state,
        "bench",
        REPORTS_DIR=str(reports),
        TASK="classify",
        BENCH_STRATEGIES="ddp,fsdp",
        BENCH_WORKERS="1,2",
        BENCH_BATCH="8",
        BENCH_STEPS="3",
        BENCH_WARMUP="1",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "samples/s" in result.stdout  # the final table
    [folder] = list((reports / "bench").iterdir())
    for name in (
        "results.csv",
        "results.json",
        "report.md",
        "throughput.png",
        "speedup.png",
        "memory.png",
    ):
        assert (folder / name).stat().st_size > 0, name

    with open(folder / "results.csv") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == COLUMNS
        rows = list(reader)
    assert [(r["strategy"], r["workers"]) for r in rows] == [
        ("ddp", "1"),
        ("ddp", "2"),
        ("fsdp", "1"),
        ("fsdp", "2"),
    ]
    assert all(r["status"] == "ok" for r in rows), rows
    by = {(r["strategy"], r["workers"]): r for r in rows}
    for strategy in ("ddp", "fsdp"):
        one, two = by[(strategy, "1")], by[(strategy, "2")]
        assert float(one["speedup"]) == 1.0
        assert float(two["speedup"]) == pytest.approx(
            float(two["samples_per_s"]) / float(one["samples_per_s"])
        )
    # FSDP shards parameters, gradients and optimizer state across the 2 ranks.
    ddp_state = int(by[("ddp", "2")]["model_state_bytes_per_rank"])
    fsdp_state = int(by[("fsdp", "2")]["model_state_bytes_per_rank"])
    assert fsdp_state <= 0.55 * ddp_state
    assert json.loads((folder / "results.json").read_text())["hardware"]["cores"] >= 1
    assert "## Reading" in (folder / "report.md").read_text()

    client = MlflowClient(f"sqlite:///{state / 'embedded' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("bench")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(parents) == 1 and len(children) == 4
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert all("samples_per_s" in c.data.metrics for c in children)


@pytest.mark.slow
def test_a_bench_cell_times_the_step_that_trains(tmp_path):
    """The same seed, config and steps give the same loss from a bench cell as from `make
    train`: the cell runs the training step itself, not a copy of it."""
    state = tmp_path / "state"
    # A learning rate that moves the loss within a few steps, so that any difference in the
    # step (schedule, clipping, accumulation, batches) shows in it.
    same = {
        "TASK": "classify",
        "PER_DEVICE_TRAIN_BATCH_SIZE": "8",
        "SEED": "7",
        "LEARNING_RATE": "0.01",
        "WARMUP_STEPS": "2",
    }
    trained = run_cli(state, "train", RUN_NAME="same", MAX_STEPS="8", LOGGING_STEPS="4", **same)
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    benched = run_cli(
        state,
        "bench",
        REPORTS_DIR=str(tmp_path / "reports"),
        BENCH_STRATEGIES="ddp",
        BENCH_WORKERS="1",
        BENCH_BATCH="8",
        BENCH_WARMUP="4",
        BENCH_STEPS="4",
        **same,
    )
    assert benched.returncode == 0, benched.stdout[-3000:] + benched.stderr[-3000:]

    client = MlflowClient(f"sqlite:///{state / 'embedded' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("classify")
    [run] = client.search_runs([experiment.experiment_id], "tags.`mlflow.runName` = 'same'")
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "train/loss")}
    [folder] = list((tmp_path / "reports" / "bench").iterdir())
    [cell] = json.loads((folder / "results.json").read_text())["rows"]
    # train/loss at step 8 is the mean over steps 5-8: the cell's four timed steps after four
    # warm-up steps, under the same learning-rate schedule. The same seed gives the same smoke
    # tokenizer and model in both processes, so the losses agree to float rounding; a step that
    # differs (no warm-up or decay, no clipping, other batches) moves the loss by far more.
    assert history[8] < history[4] - 0.01  # the loss did move
    assert cell["loss"] == pytest.approx(history[8], rel=1e-6)
