"""One optimizer step: what `make train` runs and what a `make bench` cell times.

A step runs `gradient_accumulation_steps` micro-batches (the gradient sync only on the last),
clips, steps the optimizer, the scaler and the schedule. Nothing in it waits for the device:
the loss and token counts accumulate as device tensors and are read (summed over ranks) only
when the caller asks, at logging steps."""

from __future__ import annotations

import torch
import torch.distributed as dist

from training import strategies
from training.config import TrainConfig
from training.worker import Worker, to_device


def build_optimizer(cfg: TrainConfig, model, device: torch.device) -> torch.optim.Optimizer:
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
    # The fused kernel updates every parameter in one launch; it exists on CUDA only.
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, fused=device.type == "cuda")


def linear_schedule(optimizer, warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class TrainStep:
    def __init__(self, w: Worker, total_steps: int):
        self.w = w
        self.optimizer = build_optimizer(w.cfg, w.model, w.device)
        self.scheduler = linear_schedule(self.optimizer, w.cfg.warmup_steps, total_steps)
        self.reset()

    def reset(self) -> None:
        """Start a new window of statistics."""
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.w.device)
        self.tokens = torch.zeros((), dtype=torch.float64, device=self.w.device)
        self.rows = 0  # from tensor shapes: known on the host without a sync
        self.padded = 0  # token positions computed, padding included (for MFU)

    def __call__(self, micro_batches: list[dict]) -> None:
        w, model = self.w, self.w.model
        count = len(micro_batches)
        for index, batch in enumerate(micro_batches):
            batch = to_device({k: v for k, v in batch.items() if k != "reference"}, w.device)
            with strategies.gradient_sync(model, index == count - 1), w.autocast():
                loss = model(**batch).loss
            w.scaler.scale(loss / count).backward()
            rows = batch["input_ids"].shape[0]
            self.loss_sum += loss.detach().double() * rows
            self.tokens += batch["attention_mask"].sum()
            self.rows += rows
            self.padded += batch["input_ids"].numel()
            if w.task.kind == "seq2seq":
                self.padded += batch["labels"].numel()
        if w.cfg.max_grad_norm > 0:
            w.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), w.cfg.max_grad_norm)
        w.scaler.step(self.optimizer)
        w.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()

    def read(self) -> dict[str, float]:
        """The window's totals over every rank (one host sync), then a fresh window."""
        counts = self.loss_sum.new_tensor([self.rows, self.padded])
        totals = torch.cat([torch.stack([self.loss_sum, self.tokens]), counts])
        if strategies.world_size() > 1:
            dist.all_reduce(totals)
        loss_sum, tokens, rows, padded = totals.tolist()
        self.reset()
        return {"loss": loss_sum / max(rows, 1), "rows": rows, "tokens": tokens, "padded": padded}

    def learning_rate(self) -> float:
        return self.scheduler.get_last_lr()[0]
