"""The embedded Ray cluster (no stack up) and how workers are placed on it."""

from __future__ import annotations

import os

from training import storage, tracking
from training.errors import UserError


def start(workers: int, tracking_uri: str) -> int:
    """Start the in-process Ray cluster; returns its GPU count."""
    import ray

    from training.loop import worker_environment

    # Token auth would be switched on silently by a stray ~/.ray/auth_token (ENVIRONMENT.md),
    # so the embedded cluster sets its mode explicitly.
    os.environ["RAY_AUTH_MODE"] = "disabled"
    # Workers talk to the user through the progress queue and raised errors; their own logs
    # stay in Ray's session folder instead of interleaving with the progress bar.
    ray.init(
        num_cpus=max(os.cpu_count() or 1, workers),
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
        logging_config=ray.LoggingConfig(log_level="ERROR"),
        runtime_env={
            "env_vars": {
                **worker_environment(),
                **tracking.environment_for_workers(tracking_uri),
                **storage.worker_environment(),
                "RAY_AUTH_MODE": "disabled",
            }
        },
    )
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if 0 < gpus < workers:
        raise UserError(
            f"{workers} workers need {workers} GPUs (one per worker); this machine has "
            f"{gpus}: ask for {gpus} or fewer"
        )
    return gpus


def per_worker(workers: int, use_gpu: bool) -> dict[str, float]:
    """One GPU per worker on GPU hosts; the cores shared out (at least one each)."""
    cpus = max(1, (os.cpu_count() or 1) // workers)
    return {"GPU": 1, "CPU": cpus} if use_gpu else {"CPU": cpus}
