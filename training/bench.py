"""`make bench`: DDP vs FSDP x workers x per-device batch size, measured, not estimated.

Each cell is a Ray Train run of the same worker setup as training. It runs warm-up steps that
are not timed, then a fixed number of optimizer steps, each between a barrier and a device
sync. Rank 0 gathers step times, throughput, per-rank model-state bytes (parameters +
gradients + optimizer state held by that rank) and peak memory, then the loss and the task
metric after the timed steps. A failed cell is recorded with its reason; the matrix goes on."""

from __future__ import annotations

import json
import math
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from core.errors import UserError, root_cause
from training import session as sessions
from training import worker
from training.config import input_length
from training.evaluation import evaluate
from training.settings import BenchSettings
from training.spec import WorkerSpec
from training.step import TrainStep

# Dense peak TFLOP/s per GPU by name fragment: (bf16/fp16 tensor cores, fp32).
PEAK_TFLOPS = {
    "H200": (989.0, 67.0), "H100": (989.0, 67.0), "A100": (312.0, 19.5),
    "A30": (165.0, 10.3), "A10": (125.0, 31.2), "L40": (181.0, 90.5),
    "V100": (125.0, 15.7), "RTX 6000": (130.5, 16.3), "T4": (65.0, 8.1),
    "P100": (18.7, 9.3),
}  # fmt: skip


@dataclass(frozen=True)
class Cell:
    strategy: str
    workers: int
    batch_size: int

    def label(self) -> str:
        return f"{self.strategy} x{self.workers} b{self.batch_size}"


def matrix(strategies: list[str], workers: list[int], batches: list[int]) -> list[Cell]:
    return [Cell(s, w, b) for s in strategies for b in batches for w in workers]


# --- measurement, in every worker -------------------------------------------------------------


def _local_bytes(tensor) -> int:
    if tensor is None:
        return 0
    if hasattr(tensor, "to_local"):  # FSDP2 DTensor: this rank's shard only
        tensor = tensor.to_local()
    return tensor.numel() * tensor.element_size()


def model_state_bytes(model, optimizer) -> int:
    params = list(model.parameters())
    total = sum(_local_bytes(p) for p in params)
    # Each trained parameter's gradient (same shape and dtype as its shard), held from the
    # backward pass to the end of the step.
    total += sum(_local_bytes(p) for p in params if p.requires_grad)
    for state in optimizer.state.values():
        total += sum(_local_bytes(v) for v in state.values() if torch.is_tensor(v))
    return total


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def peak_flops(device: torch.device, precision: str) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for fragment, (low, fp32) in PEAK_TFLOPS.items():
        if fragment in name:
            return (fp32 if precision == "fp32" else low) * 1e12
    return None


def _sync(device: torch.device) -> None:
    """Wait for the device and every rank: what a step's wall time is measured between."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def measure(spec: WorkerSpec, rank: int, world: int, device: torch.device) -> dict:
    """Warm up, time `steps` optimizer steps of the training step, then evaluate. Returns
    rank 0's view."""
    from torch.utils.data import DataLoader

    from training.loop import ResumableSampler

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
    for index in range(warmup + steps):
        if index == warmup:
            train_step.reset()  # the window of statistics covers the timed steps only
        _sync(device)
        started = time.perf_counter()
        train_step([next(feed) for _ in range(accumulation)])
        _sync(device)
        if index >= warmup:
            times.append(time.perf_counter() - started)
    window = train_step.read()
    worst_state, worst_peak = worker.over_ranks(
        [model_state_bytes(model, train_step.optimizer), peak_memory_bytes(device)],
        device,
        dist.ReduceOp.MAX,
    )
    metrics = evaluate(w)
    wall = sum(times)
    median = statistics.median(times)
    peak = peak_flops(device, w.precision)
    params = sum(p.numel() for p in model.parameters())  # FSDP2 DTensors: global numel
    # Training FLOPs ~ 6 x parameters x tokens processed (forward + backward, dense layers).
    per_step = window["padded"] / steps
    mfu = (6 * params * per_step / median) / (peak * world) if peak else float("nan")
    primary = w.task.primary_metric
    return {
        "step_time_median_s": median,
        "step_time_p90_s": sorted(times)[max(0, math.ceil(0.9 * len(times)) - 1)],
        "samples_per_s": window["rows"] / wall,
        "tokens_per_s": window["tokens"] / wall,
        "model_state_bytes_per_rank": int(worst_state),
        "peak_mem_bytes_per_rank": int(worst_peak),
        "mfu": mfu,
        "loss": window["loss"],
        "metric_name": primary,
        "metric_value": metrics.get(f"eval/{primary}", float("nan")),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "precision": w.precision,
        "seq_len": input_length(cfg, w.task),
    }


def cell_worker(config: dict) -> None:
    """Ray Train entry point of one cell."""
    spec: WorkerSpec = config["spec"]
    session = sessions.for_spec(spec)
    rank, world = session.rank_world()
    result = measure(spec, rank, world, session.device())
    # Ray Train keeps the metrics of checkpointed reports: rank 0 attaches a small one.
    folder = None
    if rank == 0:
        folder = Path(tempfile.mkdtemp(prefix="bench-"))
        (folder / "result.json").write_text(json.dumps(result))
    session.report(result, folder)


# --- the matrix, on the driver ----------------------------------------------------------------


def add_scaling(rows: list[dict]) -> list[dict]:
    """Speed-up vs 1 worker of the same strategy and batch, and efficiency = speed-up / workers."""
    base = {
        (r["strategy"], r["batch_size"]): r["samples_per_s"]
        for r in rows
        if r["workers"] == 1 and r["status"] == "ok"
    }
    for row in rows:
        one = base.get((row["strategy"], row["batch_size"]))
        if row["status"] == "ok" and one:
            row["speedup"] = row["samples_per_s"] / one
            row["efficiency"] = row["speedup"] / row["workers"]
        else:
            row["speedup"] = row["efficiency"] = float("nan")
    return rows


def run_matrix(
    cells: list[Cell],
    run_cell: Callable[[Cell], dict],
    task: str,
    steps: int,
    on_done: Callable[[Cell, dict], None] = lambda cell, row: None,
) -> list[dict]:
    rows = []
    for cell in cells:
        row = {
            "task": task,
            "strategy": cell.strategy,
            "workers": cell.workers,
            "batch_size": cell.batch_size,
            "steps": steps,
        }
        try:
            row.update(run_cell(cell), status="ok", error="")
        except Exception as exc:  # a failed cell (OOM, lost worker) must not stop the matrix
            row.update(status="failed", error=root_cause(exc)[:300])
        rows.append(row)
        on_done(cell, row)
    return add_scaling(rows)


def run(cfg, target, splits, source, environ=None) -> tuple[str, list[dict]]:
    """Run the matrix on the embedded cluster; write the report; returns (bench id, rows)."""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.train.v2.api.config import LoggingConfig
    from rich.progress import Progress

    from training import cluster, reports, storage, tracking
    from training.progress import console

    bench_id = time.strftime("%Y%m%d-%H%M%S")
    axes = BenchSettings.read(environ)
    gpus = cluster.start(max(axes.workers or [1]), target.tracking_uri)
    workers = axes.workers_for(gpus or (os.cpu_count() or 1))
    strategies_, batches, steps, warmup = axes.strategies, axes.batches, axes.steps, axes.warmup
    if gpus and max(workers) > gpus:
        raise UserError(
            f"BENCH_WORKERS asks for {max(workers)} workers; this machine has {gpus} GPUs"
        )
    cells = matrix(strategies_, workers, batches)
    data_ref = ray.put({"train": splits.train, "validation": splits.validation})
    # Ray Train's own files of each cell: where every node reaches them on a stack (the
    # checkpoint storage), this machine's state folder otherwise.
    where = f"{target.runs_root.rstrip('/')}/bench" if target.in_job else target.state_dir / "bench"
    storage_path, storage_filesystem = storage.ray_storage(f"{where}/{bench_id}")

    base = WorkerSpec.build(
        cfg,
        splits.label_names,
        source,
        data_ref,
        tracking_uri=target.tracking_uri,
        bench=(warmup, steps),
    )

    def run_cell(cell: Cell) -> dict:
        spec = base.replace(
            cfg={
                "strategy": cell.strategy,
                "workers": cell.workers,
                "per_device_train_batch_size": cell.batch_size,
            }
        )
        trainer = TorchTrainer(
            cell_worker,
            train_loop_config={"spec": spec},
            scaling_config=ScalingConfig(
                num_workers=cell.workers,
                use_gpu=gpus > 0,
                resources_per_worker=cluster.per_worker(cell.workers, gpus > 0),
                placement_strategy=cluster.placement(gpus > 0),
            ),
            run_config=RunConfig(
                name=f"cell-{cell.strategy}-{cell.workers}-{cell.batch_size}",
                storage_path=storage_path,
                storage_filesystem=storage_filesystem,
                failure_config=FailureConfig(max_failures=0),
                logging_config=LoggingConfig(log_level="WARNING"),
            ),
        )
        return trainer.fit().metrics

    console.print(
        f"bench {bench_id}: {cfg.task}, {len(cells)} cells "
        f"({', '.join(strategies_)} x workers {workers} x batch {batches}), "
        f"{warmup} warm-up + {steps} timed steps each, "
        f"{'GPU' if gpus else 'CPU'}"
    )
    with Progress(console=console) as bar:
        task_id = bar.add_task("bench", total=len(cells))

        def done(cell: Cell, row: dict) -> None:
            mark = (
                f"{row['samples_per_s']:.1f} samples/s"
                if row["status"] == "ok"
                else f"FAILED ({row['error']})"
            )
            bar.console.print(f"  {cell.label():16} {mark}")
            bar.advance(task_id)

        rows = run_matrix(cells, run_cell, cfg.task, steps, done)
    folder = reports.write_bench(bench_id, rows, cfg, gpus, warmup)
    reports.log_bench(tracking.Tracker(target.tracking_uri), target, bench_id, rows, folder, cfg)
    console.print(reports.bench_table(rows))
    console.print(f"report: {folder / 'report.md'}")
    return bench_id, rows
