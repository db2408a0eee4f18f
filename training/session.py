"""Where the training loop runs: a Ray Train worker group or a single-worker Ray Tune trial.

The loop asks its session for its rank, device and last checkpoint and reports through it, so
the same loop serves `make train` (a `TorchTrainer`, any number of workers) and `make tune`
(a Tune function trainable that runs the loop directly in the trial: no trainer nested inside
the trial, whose workers would need CPUs of their own; see ray-project/ray#54305)."""

from __future__ import annotations

from pathlib import Path

import torch


class TrainSession:
    """A Ray Train worker (Train V2)."""

    # Ray Train keeps whatever a report holds; evaluation runs at epoch ends only.
    evaluates_every_checkpoint = False

    def rank_world(self) -> tuple[int, int]:
        import ray.train

        ctx = ray.train.get_context()
        return ctx.get_world_rank(), ctx.get_world_size()

    def device(self) -> torch.device:
        import ray.train.torch

        return ray.train.torch.get_device()

    def get_checkpoint(self):
        import ray.train

        return ray.train.get_checkpoint()

    def report(self, metrics: dict, folder: Path | None) -> None:
        import ray.train

        checkpoint = ray.train.Checkpoint.from_directory(str(folder)) if folder else None
        ray.train.report(metrics, checkpoint=checkpoint)


class TuneSession(TrainSession):
    """One Ray Tune trial that trains on one worker (its own process, its own device)."""

    # The scheduler (ASHA) compares trials on the metric of every report: each checkpoint,
    # mid-epoch ones included, carries a fresh evaluation.
    evaluates_every_checkpoint = True

    def rank_world(self) -> tuple[int, int]:
        return 0, 1

    def device(self) -> torch.device:
        # Tune gives the trial its GPU (if any) as the only visible one.
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")

    def get_checkpoint(self):
        import ray.tune

        return ray.tune.get_checkpoint()

    def report(self, metrics: dict, folder: Path) -> None:
        import ray.tune

        ray.tune.report(metrics, checkpoint=ray.tune.Checkpoint.from_directory(str(folder)))


def for_spec(spec) -> TrainSession:
    """The worker spec names its session: "tune" in a Tune trial, else a Ray Train worker."""
    return TuneSession() if spec.session == "tune" else TrainSession()
