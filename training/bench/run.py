"""Running a benchmark on the driver: the cluster, one Ray Train run per cell (a failed cell
is recorded with its reason and the matrix goes on), the speed-up of each cell, the report."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from core.errors import UserError, root_cause
from training.bench.plan import BenchPlan, Cell
from training.spec import WorkerSpec


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


def fit_cell(base: WorkerSpec, cell: Cell, use_gpu: bool, storage_root: str, loop=None) -> dict:
    """One cell as a Ray Train run of `loop` (the bench's measurement by default); returns
    rank 0's result."""
    from training.bench.cell import cell_worker
    from training.trainer import torch_trainer

    spec = base.replace(
        cfg={
            "strategy": cell.strategy,
            "workers": cell.workers,
            "per_device_train_batch_size": cell.batch_size,
        }
    )
    trainer = torch_trainer(
        loop or cell_worker,
        spec,
        name=f"cell-{cell.strategy}-{cell.workers}-{cell.batch_size}",
        workers=cell.workers,
        use_gpu=use_gpu,
        storage_root=storage_root,
    )
    return trainer.fit().metrics


def run(p: BenchPlan) -> tuple[str, list[dict]]:
    """Run the matrix on the embedded cluster (or the stack's, in a job); write the report;
    returns (bench id, rows)."""
    import ray
    from rich.progress import Progress

    from training import cluster, tracking
    from training.bench import report
    from training.progress import console

    cfg, target, axes = p.cfg, p.target, p.axes
    bench_id = time.strftime("%Y%m%d-%H%M%S")
    gpus = cluster.start(max(axes.workers or [1]), target.tracking_uri)
    cells = p.cells(gpus or (os.cpu_count() or 1))
    workers = sorted({c.workers for c in cells})
    if gpus and max(workers) > gpus:
        raise UserError(
            f"BENCH_WORKERS asks for {max(workers)} workers; this machine has {gpus} GPUs"
        )
    data_ref = ray.put({"train": p.splits.train, "validation": p.splits.validation})
    # Ray Train's own files of each cell: where every node reaches them on a stack (the
    # checkpoint storage), this machine's state folder otherwise.
    where = f"{target.runs_root.rstrip('/')}/bench" if target.in_job else target.state_dir / "bench"
    base = WorkerSpec.build(
        cfg,
        p.splits.label_names,
        p.source,
        data_ref,
        tracking_uri=target.tracking_uri,
        bench=(axes.warmup, axes.steps),
    )

    console.print(
        f"bench {bench_id}: {cfg.task}, {len(cells)} cells "
        f"({', '.join(axes.strategies)} x workers {workers} x batch {axes.batches}), "
        f"{axes.warmup} warm-up + {axes.steps} timed steps each, "
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

        def run_cell(cell: Cell) -> dict:
            return fit_cell(base, cell, gpus > 0, f"{where}/{bench_id}")

        rows = run_matrix(cells, run_cell, cfg.task, axes.steps, done)
    folder = report.write(bench_id, rows, cfg, gpus, axes.warmup)
    report.log(tracking.Tracker(target.tracking_uri), target, bench_id, rows, folder, cfg)
    console.print(report.table(rows))
    console.print(f"report: {folder / 'report.md'}")
    return bench_id, rows
