"""`train`: resolve and check everything, then run the loop on Ray Train and log the result.

Order matters for "nothing half-written": config, data, model source and the run to continue
are all checked before the first folder, MLflow run or Ray process is made."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

from core.errors import UserError, root_cause
from training import cluster, interrupts, lease, lifecycle, models, storage, tracking
from training import data as datamod
from training.config import TrainConfig, build_config, validate
from training.phases import PROCESS_START, Phases
from training.progress import TrainingProgress, console, final_table
from training.spec import WorkerSpec
from training.targets import Target
from training.tasks import TASKS, Task
from training.trainer import torch_trainer

# How a checkpoint refused by training/checkpoints.py reaches the driver (the driver does not
# import the loop's modules).
UNSAFE_CHECKPOINT = "UnsafeCheckpoint: "


class TrainingFailed(UserError):
    """The training itself failed (its checkpoints are kept): a study records the cell as
    failed and goes on; `make train` reports it in one line."""


@dataclass
class RunPlan:
    cfg: TrainConfig
    task: Task
    target: Target
    run_name: str
    run_id: str | None  # the MLflow run being continued; None for a new run
    splits: datamod.Splits
    source: models.ModelSource
    # A study's cell: the study's experiment and run (the cell's parent), tags, its record's
    # study, and the command that continues it; the defaults are `make train`'s.
    experiment: str = ""  # "" = the task's
    parent_run_id: str | None = None
    tags: dict = field(default_factory=dict)
    study: str = ""
    resume_hint: str = ""

    def continue_with(self) -> str:
        """The command that continues this run after a stop, as the messages quote it."""
        if self.resume_hint:
            return f"`{self.resume_hint}`"
        return f"`make train TASK={self.task.name} RUN_NAME={self.run_name}` (or RESUME=1)"


@dataclass
class RunOutcome:
    run_id: str
    metrics: dict  # the final evaluation and step
    perf: dict  # where the time went and what the workers measured (MLflow's perf/*)


def resolve_config(layers: list[dict], target: Target) -> TrainConfig:
    """Apply task and profile defaults under the user's layers, then validate the whole."""
    user: dict = {}
    for layer in layers:
        user.update(layer)
    task_name = str(user.get("task") or "classify")
    if task_name not in TASKS:
        build_config([{"task": task_name}])  # raises the unknown-task error
    profile = str(user.get("profile") or target.default_profile())
    base = {"task": task_name, "profile": profile}
    return build_config([TASKS[task_name].defaults.get(profile, {}), *layers, base])


def plan(cfg: TrainConfig, explicit: dict, target: Target, check_lease: bool = True) -> RunPlan:
    """Everything checked before anything is made; `check_lease=False` for a study's cell (the
    study planned its cells against the lease itself)."""
    task = TASKS[cfg.task]
    run_name, record = lifecycle.find(cfg, target, lifecycle.RUN, task)
    if record is not None:
        # Continue with the run's own settings; only what the user set now overrides them.
        saved = {k: v for k, v in record["config"].items() if k in TrainConfig.field_names()}
        overrides = {k: v for k, v in explicit.items() if k not in ("resume", "run_name")}
        cfg = build_config([saved, overrides, {"run_name": run_name, "resume": True}])
        console.print(f"continuing run [bold]{run_name}[/] from its latest checkpoint")
    cfg.run_name = run_name or f"{task.name}-{cfg.profile}-{time.strftime('%Y%m%d-%H%M%S')}"
    validate(cfg)

    splits = datamod.prepare(task, cfg)
    lifecycle.check_data(lifecycle.RUN, cfg.run_name, record, splits.manifest)
    source = lifecycle.saved_source(record) if record else models.resolve(task, cfg)
    lifecycle.check_batches(cfg, len(splits.train))
    storage.check(target.runs_root)
    lifecycle.check_precision(cfg, target)
    run_id = record["run_id"] if record else None
    if target.lease_end and check_lease:
        lease_fits(cfg, len(splits.train), target, run_id)
    return RunPlan(cfg, task, target, cfg.run_name, run_id, splits, source)


def lease_fits(cfg: TrainConfig, train_rows: int, target: Target, run_id: str | None) -> None:
    """A run that would outlast the stack's lease is refused before anything is made."""
    tracker = tracking.Tracker(target.tracking_uri)
    end = lease.parse_end(target.lease_end)
    try:
        line = lease.check_fits(cfg, train_rows, end, target.hardware, tracker, run_id)
    except UserError:
        raise
    except Exception as exc:  # network, auth
        raise UserError(
            f"cannot reach MLflow at {target.tracking_uri} to estimate the run against the "
            f"lease ({str(exc).splitlines()[0]}); check `make status`"
        ) from None
    console.print(line)


def _record(p: RunPlan, run_id: str) -> dict:
    return {
        "config": p.cfg.to_dict(),
        "run_id": run_id,
        "manifest": p.splits.manifest,
        "source": lifecycle.source_fields(p.source),
        "labels": p.splits.label_names,
        **({"study": p.study} if p.study else {}),
    }


def _start_run(tracker: tracking.Tracker, p: RunPlan, experiment_id: str) -> str:
    """A `make train` run: tags, the whole config as params, the data as dataset inputs."""
    manifest = p.splits.manifest
    frames = (
        ("training", p.splits.train, "train"),
        ("validation", p.splits.validation, "validation"),
    )
    return tracker.start_run(
        experiment_id,
        p.run_name,
        tags=tracking.run_tags(
            p.task.name,
            p.cfg.profile,
            strategy=p.cfg.strategy,
            workers=p.cfg.workers,
            hardware=p.target.hardware,
            model_source=p.source.describe(),
            data_source=p.splits.source,
            speed_key=lease.speed_key(p.cfg),
            **p.tags,
        ),
        params=p.cfg.to_dict(),
        parent=p.parent_run_id,
        datasets=[
            tracking.dataset(
                frame,
                f"{p.task.name}-{context}",
                p.task.target_column,
                manifest[split]["sha256"][:16],
                context,
            )
            for context, frame, split in frames
        ],
        documents={"data/manifest.json": manifest},
    )


def _beside_ray(p: RunPlan) -> tuple[tracking.Tracker, str, str]:
    """What the driver does while Ray starts: MLflow's client, the task's experiment and the
    run (the one continued, or a new one), then the import of torch, which Ray Train's torch
    trainer needs (torch shares no module with ray.init: neither thread waits on the other)."""
    tracker = tracking.Tracker(p.target.tracking_uri)
    experiment_id = tracker.experiment(p.experiment or p.task.name, p.target.artifact_root)
    run_id = p.run_id or _start_run(tracker, p, experiment_id)
    import torch  # noqa: F401

    return tracker, experiment_id, run_id


def train_loop_per_worker(config: dict) -> None:
    """What the trainer hands each worker: the loop, imported there. The driver never imports
    the loop's own modules (torch's distributed checkpointing, the worker's set-up)."""
    from training.loop import train_loop_per_worker as loop

    loop(config)


def run(p: RunPlan, started: float = PROCESS_START, keep_cluster: bool = False) -> RunOutcome:
    """Start (or continue) the run. `started`: when its command (or study cell) began, for
    where the time went; `keep_cluster`: leave the cluster up for the next run (a study's)."""
    from concurrent.futures import ThreadPoolExecutor

    target, cfg, task, source = p.target, p.cfg, p.task, p.source
    folder = target.run_folder(p.run_name)
    with lifecycle.removed_on_failure(folder), ThreadPoolExecutor(max_workers=1) as pool:
        # ray.init stays on the main thread, which owns the signal handlers. A new run made
        # beside a Ray that did not start is deleted again: nothing half-made stays.
        tracked = pool.submit(_beside_ray, p)
        try:
            gpus = cluster.start(cfg.workers, target.tracking_uri)
        except BaseException:
            if p.run_id is None and tracked.exception() is None:
                tracker, _, new_run = tracked.result()
                with contextlib.suppress(Exception):  # the failed start is what to report
                    tracker.delete(new_run)
            raise
        tracker, experiment_id, run_id = tracked.result()
        if p.run_id is None:
            lifecycle.write(target, lifecycle.RUN, p.run_name, _record(p, run_id))
    use_gpu = gpus > 0

    import ray

    url = target.run_url(experiment_id, run_id)
    console.print(
        f"[bold]{task.name}[/] run [bold]{p.run_name}[/] · profile {cfg.profile} · "
        f"{cfg.workers} worker(s), {cfg.strategy}, "
        f"{'GPU' if use_gpu else 'CPU'} · {source.describe()}"
    )
    console.print(f"MLflow run {run_id}: {url}")

    queue = cluster.progress_queue()
    spec = WorkerSpec.build(
        cfg,
        p.splits.label_names,
        source,
        ray.put({"train": p.splits.train, "validation": p.splits.validation}),
        tracking_uri=target.tracking_uri,
        run_id=run_id,
        progress=queue,
        lease_end=target.lease_end,
    )
    trainer = torch_trainer(
        train_loop_per_worker,
        spec,
        name=p.run_name,
        workers=cfg.workers,
        use_gpu=use_gpu,
        storage_root=target.runs_root,
        max_failures=cfg.max_failures,
        keep=cfg.save_total_limit,
    )
    tracker.running(run_id)

    def stopped() -> KeyboardInterrupt:
        tracker.finish(run_id, "KILLED")
        console.print(f"stopped. Checkpoints are kept; continue with {p.continue_with()}")
        return KeyboardInterrupt()

    progress = TrainingProgress(queue, f"{task.name} {cfg.profile}")
    try:
        with progress:
            result = trainer.fit()
    except BaseException as exc:
        # Ray Train's own Ctrl-C handler aborts the run and may end in sys.exit(0).
        if isinstance(exc, KeyboardInterrupt | SystemExit) or interrupts.requested():
            raise stopped() from None
        if not isinstance(exc, Exception):
            raise
        if (cause := root_cause(exc)).find(tracking.TrackingUnreachable.MARK) >= 0:
            # MLflow is gone: the run cannot be marked; its checkpoint holds what MLflow missed.
            what = cause[cause.find(tracking.TrackingUnreachable.MARK) :]
            raise UserError(
                f"{what}; when MLflow answers again, continue with {p.continue_with()}"
            ) from None
        tracker.finish(run_id, "FAILED")
        if UNSAFE_CHECKPOINT in cause:  # its line says what to do
            refusal = cause[cause.find(UNSAFE_CHECKPOINT) + len(UNSAFE_CHECKPOINT) :]
            raise TrainingFailed(f"resuming refused: {refusal}") from None
        again = f"`{p.resume_hint}`" if p.resume_hint else f"RUN_NAME={p.run_name}"
        raise TrainingFailed(
            f"training failed: {root_cause(exc)}; checkpoints are kept, fix the "
            f"cause and continue with {again}"
        ) from None

    # Ray Train answers Ctrl-C itself (it aborts the run), and then fit() returns without the
    # final model: the run was stopped, not finished.
    if result.checkpoint is None:
        raise stopped()
    # The final model is in the last checkpoint, which may lie in object storage.
    spent = Phases(started)
    if progress.started_at is not None:
        spent.add("start-up", progress.started_at - started)
    for name, seconds in progress.worker_phases.items():
        spent.add(name, seconds)
    with (
        spent.timed("model logging"),
        storage.local_folder(result.checkpoint, "model") as model_dir,
    ):
        if not model_dir.is_dir():
            raise stopped()
        with ThreadPoolExecutor(max_workers=1) as pool:
            # Logging the model needs no Ray: the cluster is stopped meanwhile.
            logged = pool.submit(tracker.log_model, run_id, model_dir, task, cfg)
            if keep_cluster:
                _shut(queue)
            else:
                cluster.stop()
            registered = logged.result()
    perf = _perf(spent, progress.worker_measures, started)
    tracker.log_metrics(run_id, {f"{lease.PERF}{k}": v for k, v in perf.items()})
    tracker.finish(run_id, "FINISHED")
    lifecycle.mark_finished(target, lifecycle.RUN, p.run_name)
    metrics = {k: v for k, v in result.metrics.items() if k.startswith("eval/")}
    metrics["step"] = result.metrics.get("step")
    console.print(final_table(metrics))
    console.print(f"model registered as [bold]{registered}[/]; MLflow run: {url}")
    if target.embedded:
        console.print("view runs with `make ui` (MLflow UI on http://127.0.0.1:5000)")
    console.print(spent.line())
    return RunOutcome(run_id, metrics, perf)


def _shut(queue) -> None:
    """The run's progress queue actor, ended with the run when the cluster stays up."""
    with contextlib.suppress(Exception):
        queue.shutdown()


def _perf(spent: Phases, measured: dict, started: float) -> dict[str, float]:
    """Where the run's time went (this process's part of it, for a continued run) and what
    rank 0 measured (steps, samples, memory, MFU): what a later run's time is estimated from."""
    names = {"start-up": "startup_s", "model logging": "model_logging_s"}
    perf = {names.get(k, f"{k}_s"): v for k, v in spent.seconds.items()}
    perf["wall_s"] = time.monotonic() - started
    perf.update(measured)
    if perf.get("training_s") and perf.get("samples"):
        perf["samples_per_s"] = perf["samples"] / perf["training_s"]
    return {k: float(v) for k, v in perf.items() if not math.isnan(float(v))}
