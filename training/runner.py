"""`train`: resolve and check everything, then run the loop on Ray Train and log the result.

Order matters for "nothing half-written": config, data, model source and the run to continue
are all checked before the first folder, MLflow run or Ray process is made."""

from __future__ import annotations

import json
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from training import cluster, interrupts, models, storage, tracking
from training import data as datamod
from training.config import TrainConfig, build_config, validate
from core.errors import UserError, root_cause
from training.progress import TrainingProgress, console, final_table
from training.targets import Target
from training.tasks import TASKS, Task

RUN_RECORD = "run.json"


@dataclass
class RunPlan:
    cfg: TrainConfig
    task: Task
    target: Target
    run_name: str
    run_id: str | None  # the MLflow run being continued; None for a new run
    splits: datamod.Splits
    source: models.ModelSource | None  # None: build the smoke model


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


def _saved_record(target: Target, run_name: str) -> dict | None:
    record = target.run_folder(run_name) / RUN_RECORD
    return json.loads(record.read_text()) if record.is_file() else None


def plan(cfg: TrainConfig, explicit: dict, target: Target) -> RunPlan:
    task = TASKS[cfg.task]
    run_id = None
    run_name = cfg.run_name
    if cfg.resume and not run_name:
        latest = _latest_run_name(target, task)
        if latest is None:
            raise UserError(
                f"RESUME=1: there is no earlier {task.name} run to continue; "
                f"start one with `make train TASK={task.name}`"
            )
        run_name = latest
    record = _saved_record(target, run_name) if run_name else None
    if cfg.resume and record is None:
        raise UserError(
            f"RESUME=1: run {run_name!r} has no record under {target.state_dir}; "
            "check RUN_NAME, or start a new run without RESUME"
        )
    if record is not None and record.get("finished"):
        raise UserError(
            f"run {run_name!r} already finished; pick a new RUN_NAME or drop it "
            "to start a fresh run"
        )
    if record is not None:
        # Continue with the run's own settings; only what the user set now overrides them.
        saved = {k: v for k, v in record["config"].items() if k in TrainConfig.field_names()}
        overrides = {k: v for k, v in explicit.items() if k not in ("resume", "run_name")}
        cfg = build_config([saved, overrides, {"run_name": run_name, "resume": True}])
        run_id = record["run_id"]
        console.print(f"continuing run [bold]{run_name}[/] from its latest checkpoint")
    if not run_name:
        run_name = f"{task.name}-{cfg.profile}-{time.strftime('%Y%m%d-%H%M%S')}"
    cfg.run_name = run_name
    validate(cfg)

    splits = datamod.prepare(task, cfg)
    if (
        record is not None
        and splits.manifest["train"]["sha256"] != record["manifest"]["train"]["sha256"]
    ):
        raise UserError(
            f"the data of run {run_name!r} changed since it started (train hash "
            "differs); continue it with its own data or start a new run"
        )
    source = models.ModelSource(**record["source"]) if record else models.resolve(task, cfg)
    check_batches(cfg, len(splits.train))
    storage.check(target.runs_root)
    if target.embedded:
        import torch

        check_precision(cfg, torch.cuda.is_available())
    return RunPlan(cfg, task, target, run_name, run_id, splits, source)


def _latest_run_name(target: Target, task: Task) -> str | None:
    runs = target.state_dir / "runs"
    records = [p for p in runs.glob(f"*/{RUN_RECORD}")] if runs.is_dir() else []
    mine = [p for p in records if json.loads(p.read_text())["config"]["task"] == task.name]
    return max(mine, key=lambda p: p.stat().st_mtime).parent.name if mine else None


def check_batches(cfg: TrainConfig, rows: int) -> None:
    per_worker = rows // cfg.workers
    batches = per_worker // cfg.per_device_train_batch_size
    if batches < cfg.gradient_accumulation_steps:
        raise UserError(
            f"{rows} training rows give {batches} batches per worker per epoch, fewer than "
            f"gradient_accumulation_steps={cfg.gradient_accumulation_steps}; lower "
            "per_device_train_batch_size, gradient_accumulation_steps or WORKERS, or add data"
        )


def check_precision(cfg: TrainConfig, use_gpu: bool) -> None:
    if cfg.precision == "fp16" and not use_gpu:
        raise UserError("precision=fp16 needs a GPU; on CPU use precision=fp32 or bf16")


@contextmanager
def removed_on_failure(folder: Path):
    """Remove `folder` if the block fails and the folder is new: nothing half-written stays."""
    new = not folder.exists()
    try:
        yield
    except BaseException:
        if new:
            shutil.rmtree(folder, ignore_errors=True)
        raise


def base_model(source, task: Task, splits, cfg: TrainConfig, folder: Path) -> models.ModelSource:
    """The resolved source, or the smoke model built into the run folder."""
    if source is not None:
        return source
    return models.build_smoke(
        task, splits.train, cfg.seed, splits.label_names, folder / "base_model", cfg.smoke_model
    )


def _write_record(p: RunPlan, run_id: str, source: models.ModelSource) -> None:
    folder = p.target.run_folder(p.run_name)
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "config": p.cfg.to_dict(),
        "run_id": run_id,
        "manifest": p.splits.manifest,
        "source": {"location": source.location, "kind": source.kind},
        "labels": p.splits.label_names,
    }
    tmp = folder / (RUN_RECORD + ".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(folder / RUN_RECORD)


def _mark_finished(folder: Path) -> None:
    record = json.loads((folder / RUN_RECORD).read_text())
    record["finished"] = True
    (folder / RUN_RECORD).write_text(json.dumps(record, indent=2))


def run(p: RunPlan) -> dict:
    """Start (or continue) the run; returns its final metrics."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.train.v2.api.config import LoggingConfig
    from ray.util.queue import Queue

    from training.loop import train_loop_per_worker

    target, cfg, task = p.target, p.cfg, p.task
    experiment_id = tracking.experiment_id(target.tracking_uri, task.name, target.artifact_root)

    gpus = cluster.start(cfg.workers, target.tracking_uri)
    use_gpu = gpus > 0

    folder = target.run_folder(p.run_name)
    run_id = p.run_id
    with removed_on_failure(folder):
        source = base_model(p.source, task, p.splits, cfg, folder)
        if run_id is None:
            run_id = tracking.start_run(p, experiment_id)
            _write_record(p, run_id, source)
    url = target.run_url(experiment_id, run_id)
    console.print(
        f"[bold]{task.name}[/] run [bold]{p.run_name}[/] · profile {cfg.profile} · "
        f"{cfg.workers} worker(s), {cfg.strategy}, "
        f"{'GPU' if use_gpu else 'CPU'} · {source.describe()}"
    )
    console.print(f"MLflow run {run_id}: {url}")

    storage_path, storage_filesystem = storage.ray_storage(target.runs_root)
    queue = Queue(actor_options={"num_cpus": 0})
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "cfg": cfg.to_dict(),
            "labels": p.splits.label_names,
            "source": {"location": source.location, "kind": source.kind},
            "data": ray.put({"train": p.splits.train, "validation": p.splits.validation}),
            "tracking_uri": target.tracking_uri,
            "run_id": run_id,
            "progress": queue,
        },
        scaling_config=ScalingConfig(
            num_workers=cfg.workers,
            use_gpu=use_gpu,
            resources_per_worker=cluster.per_worker(cfg.workers, use_gpu),
        ),
        run_config=RunConfig(
            name=p.run_name,
            storage_path=storage_path,
            storage_filesystem=storage_filesystem,
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.save_total_limit),
            failure_config=FailureConfig(max_failures=0),
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )
    mlflow_client = tracking.client(target.tracking_uri)
    mlflow_client.update_run(run_id, status="RUNNING")

    def stopped() -> KeyboardInterrupt:
        mlflow_client.set_terminated(run_id, status="KILLED")
        console.print(
            f"stopped. Checkpoints are kept; continue with `make train "
            f"TASK={task.name} RUN_NAME={p.run_name}` (or RESUME=1)"
        )
        return KeyboardInterrupt()

    try:
        with TrainingProgress(queue, f"{task.name} {cfg.profile}"):
            result = trainer.fit()
    except BaseException as exc:
        # Ray Train's own Ctrl-C handler aborts the run and may end in sys.exit(0).
        if isinstance(exc, KeyboardInterrupt | SystemExit) or interrupts.requested():
            raise stopped() from None
        if not isinstance(exc, Exception):
            raise
        mlflow_client.set_terminated(run_id, status="FAILED")
        raise UserError(
            f"training failed: {root_cause(exc)}; checkpoints are kept, fix the "
            f"cause and continue with RUN_NAME={p.run_name}"
        ) from None

    # Ray Train answers Ctrl-C itself (it aborts the run), and then fit() returns without the
    # final model: the run was stopped, not finished.
    if result.checkpoint is None:
        raise stopped()
    # The final model is in the last checkpoint, which may lie in object storage.
    with storage.local_folder(result.checkpoint, "model") as model_dir:
        if not model_dir.is_dir():
            raise stopped()
        registered = tracking.log_model(p, run_id, model_dir)
    mlflow_client.set_terminated(run_id, status="FINISHED")
    _mark_finished(folder)
    metrics = {k: v for k, v in result.metrics.items() if k.startswith("eval/")}
    metrics["step"] = result.metrics.get("step")
    console.print(final_table(metrics))
    console.print(f"model registered as [bold]{registered}[/]; MLflow run: {url}")
    if target.embedded:
        console.print("view runs with `make ui` (MLflow UI on http://127.0.0.1:5000)")
    return metrics
