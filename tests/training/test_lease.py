"""Lease-aware training: a run that would outlast the stack's lease is refused before anything
is made (estimated from a finished run of the same task and hardware on the real MLflow
store), and a run under 30 minutes from the lease's end checkpoints once and says so."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from mlflow import MlflowClient

from core.errors import UserError
from tests.conftest import REPO, cli_env
from training import lease, tracking
from training.config import build_config


@pytest.fixture
def tracker(tmp_path) -> tracking.Tracker:
    return tracking.Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")


def finished_run(tracker, hardware: str, samples_per_s: float, workers: int = 1) -> str:
    experiment = tracker.experiment("classify")
    run_id = tracker.start_run(experiment, "measured", {"hardware": hardware,
                                                        "workers": str(workers)})  # fmt: skip
    tracker.log_metrics(run_id, {lease.THROUGHPUT: samples_per_s}, step=10)
    tracker.finish(run_id, "FINISHED")
    return run_id


def config(**settings):
    return build_config([{"task": "classify", "per_device_train_batch_size": 16, **settings}])


NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def test_a_run_longer_than_the_lease_is_refused_with_what_to_do(tracker, monkeypatch):
    monkeypatch.delenv(lease.OVERRUN, raising=False)
    finished_run(tracker, "g1.h100.pci.1", samples_per_s=8.0, workers=2)  # 4 per worker
    # 3600 steps x 16 rows / 4 samples/s per worker = 4 h, with 3 h left.
    cfg = config(max_steps=3600)
    with pytest.raises(UserError) as refused:
        lease.check_fits(cfg, 1000, NOW + timedelta(hours=3), "g1.h100.pci.1", tracker, now=NOW)
    message = str(refused.value)
    assert "3.0 h left" in message and "about 4.0 h" in message, message
    assert "make extend HOURS=4" in message and "PAST_LEASE_END=1" in message, message
    # Told to go on, it starts (and says the estimate).
    monkeypatch.setenv(lease.OVERRUN, "1")
    line = lease.check_fits(cfg, 1000, NOW + timedelta(hours=3), "g1.h100.pci.1", tracker,
                            now=NOW)  # fmt: skip
    assert "about 4.0 h" in line


def test_a_run_that_fits_starts_and_a_continued_run_counts_only_its_remaining_steps(tracker):
    finished_run(tracker, "g1.h100.pci.1", samples_per_s=4.0)
    cfg = config(max_steps=3600)  # 4 h in all
    end = NOW + timedelta(hours=5)
    assert "about 4.0 h" in lease.check_fits(cfg, 1000, end, "g1.h100.pci.1", tracker, now=NOW)
    # A run that already logged 2700 of its 3600 steps has 1 h to go, which 2 h left hold.
    continued = tracker.start_run(tracker.experiment("classify"), "half", {})
    tracker.log_metrics(continued, {"train/loss": 0.5}, step=2700)
    end = NOW + timedelta(hours=2)
    line = lease.check_fits(cfg, 1000, end, "g1.h100.pci.1", tracker, continued, now=NOW)
    assert "900 steps" in line and "about 1.0 h" in line, line


def test_without_a_measurement_on_this_hardware_the_run_starts_and_says_so(tracker):
    finished_run(tracker, "gpu_a100_pcie", samples_per_s=4.0)  # another node type
    line = lease.check_fits(config(max_steps=10**6), 1000, NOW + timedelta(hours=1),
                            "g1.h100.pci.1", tracker, now=NOW)  # fmt: skip
    assert "no finished classify run on g1.h100.pci.1" in line, line


def test_an_ended_lease_refuses_every_run(tracker):
    with pytest.raises(UserError, match="lease ended at 2026-12-02 11:00 UTC; `make up`"):
        lease.check_fits(config(), 1000, NOW - timedelta(hours=1), "x", tracker, now=NOW)


def test_steps_are_counted_as_the_training_loop_counts_them():
    assert lease.planned_steps(config(max_steps=7), 10_000) == 7
    # 1000 rows over 2 workers, 16 a batch, 2 batches a step: 15 steps an epoch, 3 epochs.
    cfg = config(workers=2, gradient_accumulation_steps=2, num_train_epochs=3)
    assert lease.planned_steps(cfg, 1000) == 45


DRIVER = """
import sys
from core.errors import UserError
from training import cli, runner, targets
cli._quiet()
target = targets.resolve()
target.cloud, target.lease_end, target.hardware = "chameleon", sys.argv[1], "test-cpu"
settings = {"task": "classify", "profile": "smoke", "max_steps": 4, "logging_steps": 2}
cfg = runner.resolve_config([{**settings, "run_name": "near-the-end"}], target)
runner.run(runner.plan(cfg, {}, target))
cfg = runner.resolve_config([{**settings, "max_steps": 10**7, "run_name": "too-long"}], target)
try:
    runner.plan(cfg, {}, target)
except UserError as exc:
    print("refused:", exc)
"""


@pytest.mark.slow
def test_a_run_near_the_lease_end_checkpoints_once_and_says_so(tmp_path):
    """The runner on a Chameleon-like target whose lease ends in 10 minutes (the embedded
    cluster stands in for the stack's)."""
    state = tmp_path / "state"
    end = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, end],
        cwd=REPO,
        env=cli_env(state),
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "no finished classify run on test-cpu yet" in out, out[-3000:]
    said = [line for line in out.splitlines() if "checkpoint saved at step 2" in line]
    assert len(said) == 1 and "min left" in said[0] and "RESUME=1" in said[0], out[-3000:]
    client = MlflowClient(f"sqlite:///{state / 'embedded' / 'mlflow.db'}")
    (run,) = client.search_runs(
        [client.get_experiment_by_name("classify").experiment_id],
        filter_string="tags.`mlflow.runName` = 'near-the-end'",
    )
    assert run.info.status == "FINISHED"
    assert run.data.tags["lease_checkpoint_step"] == "2" and run.data.tags["hardware"] == "test-cpu"
    # The lease's checkpoint at step 2 beside the final one at step 4 (the epoch is longer).
    run_folder = Path(state, "embedded", "runs", "near-the-end")
    kept = [p for p in run_folder.glob("checkpoint_*") if p.is_dir()]
    assert len(kept) == 2, kept
    # The finished run is now the measurement: ten million steps do not fit in 10 minutes.
    (refusal,) = [line for line in out.splitlines() if line.startswith("refused:")]
    assert "more than the lease has left" in refusal and "samples/s per worker" in refusal
