"""The one place a Ray Train trainer is built, for `make train`, a `make bench` cell and a
`make study` probe: the worker group (how many, GPU or CPU, cores each, placement), where Ray
keeps the run's files (a folder or s3://), restarts after a lost worker, checkpoints kept and
Ray's own log level. (`make tune` runs each trial as a Tune function trainable instead: no
trainer is nested in a trial; see training/session.py.)"""

from __future__ import annotations

from collections.abc import Callable

from training import cluster, storage
from training.spec import WorkerSpec


def torch_trainer(
    loop: Callable[[dict], None],
    spec: WorkerSpec,
    *,
    name: str,
    workers: int,
    use_gpu: bool,
    storage_root: str,
    max_failures: int = 0,
    keep: int | None = None,
    extra: dict | None = None,
):
    """A TorchTrainer that runs `loop({"spec": spec, **extra})` on `workers` workers, its files
    under `storage_root/name`; `keep` checkpoints are kept (None: all, for runs that make
    none)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.train.v2.api.config import LoggingConfig

    storage_path, storage_filesystem = storage.ray_storage(storage_root)
    return TorchTrainer(
        loop,
        train_loop_config={"spec": spec, **(extra or {})},
        scaling_config=ScalingConfig(
            num_workers=workers,
            use_gpu=use_gpu,
            resources_per_worker=cluster.per_worker(workers, use_gpu),
            placement_strategy=cluster.placement(use_gpu),
        ),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path,
            storage_filesystem=storage_filesystem,
            checkpoint_config=CheckpointConfig(num_to_keep=keep),
            failure_config=FailureConfig(max_failures=max_failures),
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )
