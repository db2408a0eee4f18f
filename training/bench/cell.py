"""One benchmark cell, in every worker: warm-up steps that are not timed, then a fixed number
of optimizer steps of the training step itself, each between a barrier and a device sync; then
one evaluation. Rank 0 gathers step times, throughput, per-rank model-state bytes (parameters
+ gradients + optimizer state held by that rank) and peak memory, then the loss and the task
metric after the timed steps. A `make study` probe runs the same measurement per cell."""

from __future__ import annotations

import json
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist

from training import measures, worker
from training import session as sessions
from training.config import input_length
from training.evaluation import evaluate
from training.spec import WorkerSpec
from training.step import TrainStep


def _sync(device: torch.device) -> None:
    """Wait for the device and every rank: what a step's wall time is measured between."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def measure(
    spec: WorkerSpec,
    rank: int,
    world: int,
    device: torch.device,
    after: Callable[[worker.Worker, TrainStep], dict] | None = None,
) -> dict:
    """Warm up, time `steps` optimizer steps of the training step, then evaluate; `after`
    measures more with the same worker and step (a study probe's checkpoint). Returns rank
    0's view."""
    from torch.utils.data import DataLoader

    from training.loop import ResumableSampler

    started = time.perf_counter()
    w = worker.setup(spec, rank, world, device)
    cfg, model = w.cfg, w.model
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)  # this cell's peak, not the process's
    warmup, steps = spec.bench
    train_step = TrainStep(w, warmup + steps)
    # The sampler and loader of `make train`, so a cell sees the batches a run would.
    sampler = ResumableSampler(
        w.train_items, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed, drop_last=True
    )
    loader = DataLoader(
        w.train_items,
        batch_size=cfg.per_device_train_batch_size,
        sampler=sampler,
        collate_fn=w.task.collate(w.tokenizer),
        drop_last=True,
    )
    if len(loader) == 0:
        raise ValueError(f"fewer than {cfg.per_device_train_batch_size} rows per worker")
    setup_s = time.perf_counter() - started

    def batches():
        epoch = 0
        while True:  # cycle: a cell may need more batches than the data holds
            sampler.set_epoch(epoch)
            yield from loader
            epoch += 1

    feed = batches()
    accumulation = cfg.gradient_accumulation_steps
    times = []
    model.train()
    first_step = time.perf_counter()
    for index in range(warmup + steps):
        if index == warmup:
            train_step.reset()  # the window of statistics covers the timed steps only
            warmup_s = time.perf_counter() - first_step
        _sync(device)
        began = time.perf_counter()
        train_step([next(feed) for _ in range(accumulation)])
        _sync(device)
        if index >= warmup:
            times.append(time.perf_counter() - began)
    window = train_step.read()
    state = measures.model_state_bytes(model, train_step.optimizer)
    worst_state, worst_peak = worker.over_ranks(
        [state, measures.peak_memory_bytes(device)], device, dist.ReduceOp.MAX
    )
    began = time.perf_counter()
    metrics = evaluate(w)
    eval_s = time.perf_counter() - began
    wall = sum(times)
    median = statistics.median(times)
    primary = w.task.primary_metric
    return {
        "step_time_median_s": median,
        "step_time_p90_s": sorted(times)[max(0, math.ceil(0.9 * len(times)) - 1)],
        "samples_per_s": window["rows"] / wall,
        "tokens_per_s": window["tokens"] / wall,
        "model_state_bytes_per_rank": int(worst_state),
        "peak_mem_bytes_per_rank": int(worst_peak),
        "mfu": measures.mfu(model, window["padded"] / steps, median, device, w.precision, world),
        "loss": window["loss"],
        "metric_name": primary,
        "metric_value": metrics.get(f"eval/{primary}", float("nan")),
        "device": measures.device_name(device),
        "precision": w.precision,
        "seq_len": input_length(cfg, w.task),
        "setup_s": setup_s,  # the worker's set-up: model, tokenizer, encoded data
        "warmup_s": warmup_s,  # the untimed steps: the first ones pay for lazy set-up
        "step_time_mean_s": wall / steps,
        "eval_s": eval_s,  # one evaluation of the validation set
        **(after(w, train_step) if after else {}),
    }


def report(session, result: dict, rank: int) -> None:
    """Hand rank 0's result to the driver. Ray Train keeps the metrics of checkpointed
    reports only: rank 0 attaches a small one."""
    folder = None
    if rank == 0:
        folder = Path(tempfile.mkdtemp(prefix="bench-"))
        (folder / "result.json").write_text(json.dumps(result))
    session.report(result, folder)


def cell_worker(config: dict) -> None:
    """Ray Train entry point of one cell."""
    spec: WorkerSpec = config["spec"]
    session = sessions.for_spec(spec)
    rank, world = session.rank_world()
    report(session, measure(spec, rank, world, session.device()), rank)
