"""What every rank builds before its first step, for training and the benchmark alike: seeded
state, the device and precision, the tokenizer, the model wrapped for its strategy (and
compiled if asked), and the encoded data."""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from training import models, strategies
from training.config import TrainConfig, input_length
from training.spec import WorkerSpec
from training.tasks import TASKS, Task

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_precision(precision: str, device: torch.device) -> str:
    """auto: bf16 on GPUs of compute capability >= 8, fp16 on older GPUs, fp32 on CPU."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.get_device_capability(device)[0] >= 8 else "fp16"
    return "fp32"


def over_ranks(values: list[float], device: torch.device, op=dist.ReduceOp.SUM) -> list[float]:
    """The values reduced over every rank (a host sync: not for the hot path)."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if strategies.world_size() > 1:
        dist.all_reduce(tensor, op=op)
    return tensor.tolist()


def to_device(batch: dict, device: torch.device) -> dict:
    non_blocking = device.type == "cuda"
    return {
        k: v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }


@dataclass
class Worker:
    cfg: TrainConfig
    task: Task
    rank: int
    world: int
    device: torch.device
    precision: str
    tokenizer: object
    model: torch.nn.Module  # wrapped for the strategy
    train_items: list
    eval_items: list
    scaler: torch.amp.GradScaler
    use_autocast: bool

    def autocast(self):
        if not self.use_autocast:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=DTYPES[self.precision])


def setup(spec: WorkerSpec, rank: int, world: int, device: torch.device) -> Worker:
    cfg = spec.config()
    task = TASKS[cfg.task]
    seed_everything(cfg.seed)
    precision = resolve_precision(cfg.precision, device)
    dtype = DTYPES[precision]

    frames = spec.frames()
    tokenizer, model = models.build_or_load(task, spec.source, cfg, spec.labels, frames["train"])
    max_len = input_length(cfg, task)
    if task.kind == "classification":
        extra = {name: i for i, name in enumerate(spec.labels)}
    else:
        extra = cfg.max_length or task.max_target_length
    train_items = task.encode(frames["train"], tokenizer, max_len, extra)
    eval_items = task.encode(frames["validation"], tokenizer, max_len, extra)

    # FSDP casts through its mixed-precision policy; DDP and single workers use autocast.
    fsdp_dtype = dtype if cfg.strategy == "fsdp" else None
    model = strategies.wrap(model, cfg.strategy, device, fsdp_dtype)
    if cfg.compile:
        # In place (nn.Module.compile), so state-dict keys and checkpoints stay as they are.
        model.compile()
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    return Worker(
        cfg,
        task,
        rank,
        world,
        device,
        precision,
        tokenizer,
        model,
        train_items,
        eval_items,
        scaler,
        use_autocast=dtype is not None and cfg.strategy != "fsdp",
    )
