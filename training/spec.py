"""The worker contract: what the driver of `train`, `tune` and `bench` hands every worker,
typed and built once."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from training.config import TrainConfig
from training.models import ModelSource


@dataclass
class WorkerSpec:
    cfg: dict  # the resolved TrainConfig, as a dict (it crosses process boundaries)
    labels: list[str]
    source: ModelSource  # where every worker gets the base model from
    data: Any  # {"train": frame, "validation": frame}, or a Ray object ref to it
    session: str = "train"  # "train": a Ray Train worker; "tune": one Tune trial's worker
    tracking_uri: str = ""
    run_id: str = ""  # the MLflow run rank 0 writes metrics to; "" for a bench cell
    progress: Any = None  # a Ray queue rank 0 tells its progress to, if any
    bench: tuple[int, int] | None = None  # (warm-up steps, timed steps) of a bench cell
    lease_end: str = ""  # ISO end of the stack's lease: checkpoint before it (training/lease.py)

    @classmethod
    def build(
        cls, cfg: TrainConfig, labels: list[str], source: ModelSource, data: Any, **fields
    ) -> WorkerSpec:
        return cls(cfg.to_dict(), list(labels), source, data, **fields)

    def config(self) -> TrainConfig:
        return TrainConfig(**self.cfg)

    def frames(self) -> dict:
        if isinstance(self.data, dict):
            return self.data
        import ray

        return ray.get(self.data)

    def replace(self, cfg: dict | None = None, **fields) -> WorkerSpec:
        """A copy with some settings (and fields) changed: a bench cell, a Tune trial."""
        return dataclasses.replace(self, cfg={**self.cfg, **(cfg or {})}, **fields)
