"""The training loop run by every Ray Train worker: the project's own torch loop.

One loop for every task, strategy (DDP or FSDP) and device. Per optimizer step it runs
`gradient_accumulation_steps` micro-batches (gradient sync only on the last), clips, steps the
optimizer and the schedule. It evaluates at each epoch end, checkpoints at each epoch end and
every `save_steps`, and resumes from the latest checkpoint exactly where it stopped."""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from training import checkpoints, strategies, tracking
from training import session as sessions
from training.config import TrainConfig
from training.models import ModelSource, load
from training.tasks import TASKS, Task


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


DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}


class ResumableSampler(DistributedSampler):
    """DistributedSampler that can skip the samples of batches already trained this epoch."""

    skip = 0

    def __iter__(self):
        indices = list(super().__iter__())
        return iter(indices[self.skip :])

    def __len__(self) -> int:
        return super().__len__() - self.skip


def build_optimizer(cfg: TrainConfig, model) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "norm" in name.lower() else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if cfg.optim == "sgd":
        return torch.optim.SGD(groups, lr=cfg.learning_rate, momentum=0.9)
    return torch.optim.AdamW(groups, lr=cfg.learning_rate)


def linear_schedule(optimizer, warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def all_sum(values: list[float], device: torch.device) -> list[float]:
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if strategies.world_size() > 1:
        dist.all_reduce(tensor)
    return tensor.tolist()


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def evaluate(task, model, items, cfg, tokenizer, device, autocast, rank, world) -> dict:
    """Loss and task metrics on the validation set, sharded across ranks.

    Every rank runs the same number of batches (short shards are padded with repeats that are
    dropped afterwards): sharded models need every rank in every forward."""
    model.eval()
    per_rank = math.ceil(len(items) / world)
    mine = list(range(rank, len(items), world))
    real_rows = len(mine)
    mine += [mine[0]] * (per_rank - len(mine))
    collate = task.collate(tokenizer)
    outputs, loss_sum, rows = [], 0.0, 0
    bs = cfg.per_device_eval_batch_size
    plain = strategies.unwrap(model)  # DDP's wrapper has no generate(); FSDP2's module does
    with torch.no_grad():
        for start in range(0, per_rank, bs):
            chunk = mine[start : start + bs]
            batch = to_device(collate([items[i] for i in chunk]), device)
            with autocast():
                loss, out = task.eval_outputs(plain, batch, cfg, tokenizer)
            keep = max(0, min(len(chunk), real_rows - start))
            outputs.append({k: v[:keep] for k, v in out.items()})
            loss_sum += float(loss) * keep
            rows += keep
    gathered = [None] * world
    if world > 1:
        dist.all_gather_object(gathered, outputs)
    else:
        gathered = [outputs]
    total_loss, total_rows = all_sum([loss_sum, rows], device)
    model.train()
    metrics = task.compute_metrics([o for rank_out in gathered for o in rank_out])
    return {
        "eval/loss": total_loss / max(total_rows, 1),
        **{f"eval/{k}": v for k, v in metrics.items()},
    }


@dataclass
class Worker:
    """What every rank builds before its first step (shared by training and the benchmark)."""

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


def setup_worker(config: dict, rank: int, world: int, device: torch.device) -> Worker:
    cfg = TrainConfig(**config["cfg"])
    task = TASKS[cfg.task]
    seed_everything(cfg.seed)
    precision = resolve_precision(cfg.precision, device)
    dtype = DTYPES[precision]

    tokenizer, model = load(task, ModelSource(**config["source"]), config["labels"])
    frames = config["data"] if isinstance(config["data"], dict) else _ray_get(config["data"])
    max_len = cfg.max_seq_length or task.max_seq_length
    if task.kind == "classification":
        extra = {name: i for i, name in enumerate(config["labels"])}
    else:
        extra = cfg.max_length or task.max_target_length
    train_items = task.encode(frames["train"], tokenizer, max_len, extra)
    eval_items = task.encode(frames["validation"], tokenizer, max_len, extra)

    # FSDP casts through its mixed-precision policy; DDP and single workers use autocast.
    fsdp_dtype = dtype if cfg.strategy == "fsdp" else None
    model = strategies.wrap(model, cfg.strategy, device, fsdp_dtype)
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


def _ray_get(ref):
    import ray

    return ray.get(ref)


def train_loop_per_worker(config: dict) -> None:
    session = sessions.for_config(config)
    rank, world = session.rank_world()
    device = session.device()
    w = setup_worker(config, rank, world, device)
    cfg, task, model, tokenizer = w.cfg, w.task, w.model, w.tokenizer
    train_items, eval_items, scaler, autocast = w.train_items, w.eval_items, w.scaler, w.autocast

    sampler = ResumableSampler(
        train_items, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed, drop_last=True
    )
    batches_per_epoch = len(sampler) // cfg.per_device_train_batch_size
    steps_per_epoch = batches_per_epoch // cfg.gradient_accumulation_steps
    if steps_per_epoch == 0:
        raise ValueError(
            f"one epoch holds {batches_per_epoch} batches per worker, fewer than "
            f"gradient_accumulation_steps={cfg.gradient_accumulation_steps}"
        )
    total_steps = cfg.max_steps if cfg.max_steps > 0 else steps_per_epoch * cfg.num_train_epochs
    epochs = math.ceil(total_steps / steps_per_epoch)

    optimizer = build_optimizer(cfg, model)
    scheduler = linear_schedule(optimizer, cfg.warmup_steps, total_steps)

    progress = {"global_step": 0, "epoch": 0, "batch_in_epoch": 0, "pending": []}
    resumed = session.get_checkpoint()
    if resumed:
        with resumed.as_directory() as folder:
            progress = checkpoints.load(Path(folder), model, optimizer, scheduler, rank)
    buffer = tracking.MetricBuffer(config["tracking_uri"], config["run_id"], progress["pending"])
    if rank == 0 and resumed:
        buffer.flush()  # points saved with the checkpoint but maybe not yet in MLflow
        tracking.client(config["tracking_uri"]).set_tag(
            config["run_id"], "resumed_from_step", str(progress["global_step"])
        )
    step = progress["global_step"]
    queue = config.get("progress")
    last_eval: dict = {}

    def save_checkpoint(epoch: int, batch_in_epoch: int, metrics: dict, final: bool) -> None:
        folder = checkpoints.new_folder()
        state = {
            "global_step": step,
            "epoch": epoch,
            "batch_in_epoch": batch_in_epoch,
            "total_steps": total_steps,
            "pending": buffer.pending if rank == 0 else [],
        }
        checkpoints.save(folder, model, optimizer, scheduler, state, rank)
        if final:
            checkpoints.export_model(folder, model, task.model_class(), tokenizer, rank)
        session.report({**metrics, "step": step, "epoch": epoch}, folder)
        if rank == 0:
            buffer.flush()

    def tell(kind: str, **fields) -> None:
        if rank == 0 and queue is not None:
            queue.put_nowait({"kind": kind, "step": step, "total": total_steps, **fields})

    tell("start", epochs=epochs)
    model.train()
    window_loss, window_rows, started = 0.0, 0, time.perf_counter()
    collate = task.collate(tokenizer)
    for epoch in range(progress["epoch"], epochs):
        sampler.set_epoch(epoch)
        skip_batches = progress["batch_in_epoch"] if epoch == progress["epoch"] else 0
        sampler.skip = skip_batches * cfg.per_device_train_batch_size
        loader = DataLoader(
            train_items,
            batch_size=cfg.per_device_train_batch_size,
            sampler=sampler,
            collate_fn=collate,
            drop_last=True,
        )
        batch_index = skip_batches
        for batch in loader:
            if (
                step >= total_steps
                or batch_index >= steps_per_epoch * cfg.gradient_accumulation_steps
            ):
                break
            batch.pop("reference", None)
            batch = to_device(batch, device)
            sync = (batch_index + 1) % cfg.gradient_accumulation_steps == 0
            with strategies.gradient_sync(model, sync), autocast():
                loss = model(**batch).loss
            scaler.scale(loss / cfg.gradient_accumulation_steps).backward()
            rows = batch["input_ids"].shape[0]
            window_loss += float(loss.detach()) * rows
            window_rows += rows
            batch_index += 1
            if not sync:
                continue
            if cfg.max_grad_norm > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            if step % cfg.logging_steps == 0 or step == total_steps:
                loss_sum, rows_sum = all_sum([window_loss, window_rows], device)
                elapsed = time.perf_counter() - started
                metrics = {
                    "train/loss": loss_sum / max(rows_sum, 1),
                    "train/learning_rate": scheduler.get_last_lr()[0],
                    "train/samples_per_s": rows_sum / max(elapsed, 1e-9),
                }
                if rank == 0:
                    buffer.add(metrics, step)
                tell("train", loss=metrics["train/loss"], epoch=epoch)
                window_loss, window_rows, started = 0.0, 0, time.perf_counter()
            else:
                tell("train", epoch=epoch)
            end_of_epoch = batch_index >= steps_per_epoch * cfg.gradient_accumulation_steps
            if step == total_steps or end_of_epoch:
                break  # evaluation and the checkpoint follow below
            if cfg.save_steps and step % cfg.save_steps == 0:
                mid_eval = {}
                if session.evaluates_every_checkpoint:
                    mid_eval = evaluate(
                        task, model, eval_items, cfg, tokenizer, device, autocast, rank, world
                    )
                    buffer.add(mid_eval, step)
                save_checkpoint(epoch, batch_index, mid_eval, final=False)
        last_eval = evaluate(task, model, eval_items, cfg, tokenizer, device, autocast, rank, world)
        if rank == 0:
            buffer.add(last_eval, step)
        tell("eval", metrics=last_eval)
        done = step >= total_steps
        save_checkpoint(epoch + 1, 0, last_eval, final=done)
        if done:
            break
    tell("done")


def worker_environment() -> dict[str, str]:
    """Quiet Hugging Face and MLflow in workers: no progress bars or links of their own."""
    return {
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "TRANSFORMERS_VERBOSITY": "error",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
        **{k: v for k, v in os.environ.items() if k.startswith("HF_")},
    }
