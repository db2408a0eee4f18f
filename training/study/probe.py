"""The short measured probe a study plans with: for each task and worker count, one Ray Train
run that times every strategy and batch size of those cells with the bench's own measurement
(training/bench/cell.py: warm-up, timed steps of the training step, one evaluation), plus one
checkpoint and the final model's export. Nothing is tracked; Ray's files go under the state
folder (or the stack's checkpoint storage) and are removed afterwards."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from pathlib import Path

from training import models, storage
from training.progress import console
from training.spec import WorkerSpec
from training.study import estimate
from training.study.cells import Cell
from training.study.plan import StudyPlan
from training.tasks import TASKS

WARMUP_STEPS = 2  # untimed: the first steps pay for allocations and lazy set-up
TIMED_STEPS = 5


def _checkpoint_and_export(w, train_step) -> dict:
    """Time one checkpoint of the whole training state and the final model's export, as the
    loop writes them (every rank takes part; rank 0's times are kept)."""
    from training import checkpoints

    folder = checkpoints.new_folder()
    try:
        began = time.perf_counter()
        progress = {"global_step": 0, "epoch": 0, "batch_in_epoch": 0, "pending": []}
        checkpoints.save(
            folder, w.model, train_step.optimizer, train_step.scheduler, progress, w.rank
        )
        saved = time.perf_counter()
        checkpoints.export_model(folder, w.model, w.task.model_class(), w.tokenizer, w.rank)
        return {"checkpoint_s": saved - began, "export_s": time.perf_counter() - saved}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def probe_worker(config: dict) -> None:
    """Ray Train entry point: the bench's measurement of each cell in turn, in one worker
    group (one start-up for them all). The first cell is measured twice: cold, as a cell's
    own process first meets it (imports, allocations, lazy set-up), then warm like the rest."""
    from training import session as sessions
    from training.bench.cell import measure, report

    began = time.perf_counter()
    # What a cell's workers import before their first step that the measurement does not:
    # the training loop's own modules and MLflow's client (rank 0 logs through it).
    import mlflow  # noqa: F401

    import training.loop  # noqa: F401

    imports_s = time.perf_counter() - began
    spec = config["spec"]
    session = sessions.for_spec(spec)
    rank, world = session.rank_world()
    device = session.device()
    results = []
    for overrides in [config["cells"][0], *config["cells"]]:
        began = time.perf_counter()
        result = measure(spec.replace(cfg=overrides), rank, world, device, _checkpoint_and_export)
        result["probe_s"] = time.perf_counter() - began
        results.append(result)
    results[0]["probe_s"] += imports_s
    results[0]["imports_s"] = imports_s
    report(session, {"cells": json.dumps(results)}, rank)


def probe(base, cells: list[Cell], use_gpu: bool, storage_root: str) -> dict[Cell, dict]:
    """Measure `cells` (one task, one worker count) in one Ray Train run of the driver's
    cluster. Each cell's (warm) result gains what every cell pays once beyond it: `overhead_s`
    (Ray Train's controller, the worker processes, their process group: the run's time beyond
    the measurements) and `cold_s` (set-up, first steps and first evaluation in a new
    process)."""
    from training.trainer import torch_trainer

    workers = cells[0].workers
    overrides = [
        {
            "strategy": c.strategy,
            "per_device_train_batch_size": c.batch,
            "gradient_accumulation_steps": c.accumulation,
        }
        for c in cells
    ]
    trainer = torch_trainer(
        probe_worker,
        base.replace(cfg={"workers": workers}, bench=(WARMUP_STEPS, TIMED_STEPS)),
        name=f"probe-{cells[0].task}-x{workers}-{time.strftime('%H%M%S')}",
        workers=workers,
        use_gpu=use_gpu,
        storage_root=storage_root,
        extra={"cells": overrides},
    )
    began = time.perf_counter()
    cold, *warm = json.loads(trainer.fit().metrics["cells"])
    overhead = time.perf_counter() - began - cold["probe_s"] - sum(r["probe_s"] for r in warm)
    again = warm[0]  # the same cell as `cold`, warm
    cold_s = (
        cold["imports_s"]
        + cold["setup_s"]
        + max(cold["warmup_s"] - WARMUP_STEPS * again["step_time_mean_s"], 0.0)
        + max(cold["eval_s"] - again["eval_s"], 0.0)
    )
    extra = {"overhead_s": max(overhead, 0.0), "cold_s": cold_s}
    return {cell: {**r, **extra} for cell, r in zip(cells, warm, strict=True)}


def measure_unknown(p: StudyPlan, gpus: int) -> None:
    """Measure every cell that has no estimate yet, one Ray Train run per task and worker
    count; the probe's files are removed afterwards."""
    import ray

    todo = [c for c in p.cells if not c.done and c.estimate.seconds is None]
    groups: dict[tuple[str, int], list] = {}
    for c in todo:
        groups.setdefault((c.cell.task, c.cell.workers), []).append(c)
    if not groups:
        return
    where = (
        f"{p.target.runs_root.rstrip('/')}/probes/{p.study_id}"
        if p.target.in_job
        else str(p.target.state_dir / "probes" / p.study_id)
    )
    console.print(
        f"probing {len(todo)} cell(s) not measured yet, in {len(groups)} Ray Train run(s)"
    )
    try:
        for (task, workers), planned in groups.items():
            splits = p.splits[task]
            cfg = planned[0].cfg
            base = WorkerSpec.build(
                cfg,
                splits.label_names,
                models.resolve(TASKS[task], cfg),
                ray.put({"train": splits.train, "validation": splits.validation}),
                tracking_uri=p.target.tracking_uri,
            )
            measured = probe(base, [c.cell for c in planned], gpus > 0, where)
            for c in planned:
                c.estimate = estimate.from_probe(measured[c.cell], c.work)
            console.print(
                f"  {task} x{workers}: "
                + ", ".join(
                    f"{c.cell.strategy} b{c.cell.batch} {c.estimate.text()}" for c in planned
                ),
                soft_wrap=True,
            )
    finally:
        storage.remove(where)  # nothing of the probe stays (the folders it made included)
        if not p.target.in_job:
            for folder in (Path(where).parent, p.target.state_dir):
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only when empty
