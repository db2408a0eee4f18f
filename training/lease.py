"""Lease-aware training (Chameleon): a lease's end deletes every instance, and with them a run
that has not checkpointed.

- Before a run starts: its training time is estimated from its steps and the last measured
  throughput (`train/samples_per_s`) of a finished run of the same task on the same hardware;
  a run that would outlast the lease is refused unless `PAST_LEASE_END=1`.
- During a run: once under `GUARD_MINUTES` are left, the workers checkpoint (once) and say so
  in the job's log, so `RESUME=1` on a new or extended lease loses nothing.

The stack CLI records the lease's end at `make up` and `make extend`; a job learns it from the
submitting client (STACK_LEASE_END), read again at every submission."""

from __future__ import annotations

import hashlib
import json
import math
import time
from datetime import UTC, datetime

from core.errors import UserError
from core.flags import flag
from training.config import TrainConfig

GUARD_MINUTES = 30  # checkpoint when less than this is left
OVERRUN = "PAST_LEASE_END"  # 1: start a run even if its estimate outlasts the lease
THROUGHPUT = "train/samples_per_s"
PERF = "perf/"  # where a finished run's time went (runner.py logs them): what estimates use
# The settings a run's time per step, per evaluation and per checkpoint depends on (not its
# length: that is scaled), which `speed_key` hashes into a tag of every run.
SPEED_SETTINGS = (
    "task", "profile", "model", "data", "labels", "validation_split", "max_eval_samples",
    "max_seq_length", "smoke_model", "smoke_seq_len", "workers", "strategy", "compile",
    "per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
    "optim", "precision", "num_beams", "max_length", "temperature",
)  # fmt: skip


def speed_key(cfg: TrainConfig) -> str:
    """Runs of the same key on the same hardware take the same time per step."""
    chosen = {key: getattr(cfg, key) for key in SPEED_SETTINGS}
    return hashlib.sha256(json.dumps(chosen, sort_keys=True).encode()).hexdigest()[:16]


def parse_end(text: str) -> datetime | None:
    if not text:
        return None
    end = datetime.fromisoformat(text)
    return end if end.tzinfo else end.replace(tzinfo=UTC)


def planned_steps(cfg: TrainConfig, train_rows: int) -> int:
    """The optimizer steps a run takes (as the training loop counts them)."""
    if cfg.max_steps > 0:
        return cfg.max_steps
    per_worker = train_rows // max(cfg.workers, 1)
    per_epoch = per_worker // cfg.per_device_train_batch_size // cfg.gradient_accumulation_steps
    return max(per_epoch, 1) * cfg.num_train_epochs


def measured_throughput(tracker, task: str, hardware: str) -> float | None:
    """Samples/s per worker of the latest finished run of `task` on `hardware`, if MLflow
    holds one."""
    experiment = tracker.client.get_experiment_by_name(task)
    if experiment is None:
        return None
    runs = tracker.client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.hardware = '{hardware}' and attributes.status = 'FINISHED'",
        order_by=["attributes.end_time DESC"],
        max_results=10,
    )
    for run in runs:
        rate = run.data.metrics.get(THROUGHPUT)
        if rate and rate > 0:
            return rate / max(int(run.data.tags.get("workers") or 1), 1)
    return None


def steps_done(tracker, run_id: str | None) -> int:
    """The last step a continued run logged (0 for a new run)."""
    if not run_id:
        return 0
    history = tracker.client.get_metric_history(run_id, "train/loss")
    return max((m.step for m in history), default=0)


def check_fits(cfg: TrainConfig, train_rows: int, end: datetime, hardware: str, tracker,
               run_id: str | None = None, now: datetime | None = None) -> str:  # fmt: skip
    """The line to print about the lease; raises UserError when the run would outlast it."""
    now = now or datetime.now(UTC)
    left_h = (end - now).total_seconds() / 3600
    if left_h <= 0:
        raise UserError(
            f"the stack's lease ended at {end:%Y-%m-%d %H:%M} UTC; `make up` makes a new one"
        )
    remaining = max(planned_steps(cfg, train_rows) - steps_done(tracker, run_id), 0)
    per_worker = measured_throughput(tracker, cfg.task, hardware)
    if per_worker is None:
        return (
            f"lease: {left_h:.1f} h left (ends {end:%Y-%m-%d %H:%M} UTC); no finished {cfg.task} "
            f"run on {hardware} yet to estimate this one's time from"
        )
    rows_per_step = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
    estimate_h = remaining * rows_per_step / per_worker / 3600  # every worker trains alike
    line = (
        f"lease: {left_h:.1f} h left (ends {end:%Y-%m-%d %H:%M} UTC); {remaining} steps at "
        f"{per_worker:.1f} samples/s per worker take about {estimate_h:.1f} h"
    )
    if estimate_h > left_h and not flag(OVERRUN):
        raise UserError(
            f"{line}, more than the lease has left: `make extend HOURS={math.ceil(estimate_h)}`, "
            f"fewer steps (MAX_STEPS=), or {OVERRUN}=1 to start anyway (it checkpoints "
            f"{GUARD_MINUTES} min before the end)"
        )
    return line


class Guard:
    """Checkpoint once when the lease is about to end. All ranks decide together (the flag is
    reduced over ranks at logging steps only), so they save the same checkpoint."""

    def __init__(self, end: datetime | None):
        self.end = end
        self.fired = False

    def due(self, device) -> bool:
        if self.end is None or self.fired:
            return False
        from torch import distributed as dist

        from training.worker import over_ranks

        left = self.end.timestamp() - time.time()
        close = 1.0 if left < GUARD_MINUTES * 60 else 0.0
        self.fired = over_ranks([close], device, op=dist.ReduceOp.MAX)[0] > 0
        return self.fired

    def message(self, step: int) -> str:
        left_min = max((self.end.timestamp() - time.time()) / 60, 0)
        return (
            f"lease ends {self.end:%Y-%m-%d %H:%M} UTC ({left_min:.0f} min left): checkpoint "
            f"saved at step {step}; `make extend` prolongs the lease, and `RESUME=1` continues "
            "from this checkpoint on a new one"
        )
