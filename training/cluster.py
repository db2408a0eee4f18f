"""The Ray cluster a command runs on (the embedded one, or the stack's inside a job) and how
workers are placed on it."""

from __future__ import annotations

import os

from core.errors import UserError
from training import interrupts, storage, tracking
from training.targets import in_job


def start(workers: int, tracking_uri: str) -> int:
    """Start the in-process Ray cluster, or join the stack's inside a job; returns its GPUs.
    A cluster already up (a study's, for its next cell) is used as it is."""
    import ray

    from training.environment import worker_environment

    if ray.is_initialized():
        return _check_gpus(workers, "the stack" if in_job() else "this machine")
    if in_job():
        # The job's runtime environment (code, settings) and the nodes' own environment
        # (tracking, storage) already reach every worker.
        ray.init(address="auto", log_to_driver=False, logging_level="ERROR")
        interrupts.install()  # ray.init made SIGTERM a bare sys.exit
        return _check_gpus(workers, "the stack")
    # Ray switches token auth on by itself when it finds a token file (~/.ray/auth_token, left
    # by an earlier stack's client, say): the embedded cluster sets its mode explicitly.
    os.environ["RAY_AUTH_MODE"] = "disabled"
    # One machine is never drained: no preemption watcher (an actor process less to start).
    environment = {**worker_environment(), "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
    # Ray Train's settings are read by the driver as well as by its workers.
    os.environ.update({k: v for k, v in environment.items() if k.startswith("RAY_TRAIN_")})
    # Workers talk to the user through the progress queue and raised errors; their own logs
    # stay in Ray's session folder instead of interleaving with the progress bar.
    ray.init(
        # A cluster of its own, even where `ray start` left one on this machine (a local
        # stack's head): Ray would join that one otherwise.
        address="local",
        num_cpus=max(os.cpu_count() or 1, workers),
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
        logging_config=ray.LoggingConfig(log_level="ERROR"),
        # Idle workers made ready at start serve only tasks without a runtime environment of
        # their own; the runs' actors all have one, so they would be started for nothing.
        _system_config={"prestart_worker_first_driver": False},
        runtime_env={
            "env_vars": {
                **environment,
                **tracking.environment_for_workers(tracking_uri),
                **storage.worker_environment(),
                "RAY_AUTH_MODE": "disabled",
            }
        },
    )
    interrupts.install()  # ray.init made SIGTERM a bare sys.exit
    return _check_gpus(workers, "this machine")


def stop() -> None:
    """Stop the embedded cluster (or leave the stack's) now rather than at the process's exit."""
    import ray

    ray.shutdown()


def _check_gpus(workers: int, where: str) -> int:
    import ray

    gpus = int(ray.cluster_resources().get("GPU", 0))
    if 0 < gpus < workers:
        raise UserError(
            f"{workers} workers need {workers} GPUs (one per worker); {where} has "
            f"{gpus}: ask for {gpus} or fewer"
        )
    return gpus


def per_worker(workers: int, use_gpu: bool) -> dict[str, float]:
    """One GPU per worker on GPU hosts; the cores shared out (at least one each). On a stack
    the workers may land on other nodes: one core each, the rest to whoever needs it."""
    cpus = 1 if in_job() else max(1, (os.cpu_count() or 1) // workers)
    return {"GPU": 1, "CPU": cpus} if use_gpu else {"CPU": cpus}


def placement(use_gpu: bool) -> str:
    """Ray Train's placement strategy. On a stack, CPU workers (sim's hosts) go one per host
    where there are hosts enough, so their gradients cross the network as on a GPU cluster;
    GPU workers pack onto as few hosts as hold them (NVLink or PCIe before the network)."""
    return "SPREAD" if in_job() and not use_gpu else "PACK"


def progress_queue():
    """The queue workers send progress to, on the driver's own node: left to Ray, a zero-CPU
    actor lands on any node, and a lost worker host would take it along; every restart's first
    progress event would then fail, and the run with it after max_failures restarts."""
    import ray
    from ray.util.queue import Queue
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})
