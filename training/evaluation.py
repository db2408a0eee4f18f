"""Loss and task metrics on the validation set, sharded across ranks."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from training import strategies
from training.worker import Worker, over_ranks, to_device


def evaluate(w: Worker) -> dict[str, float]:
    """Every rank runs the same number of batches (short shards are padded with repeats that
    are dropped afterwards): sharded models need every rank in every forward."""
    model, items, world = w.model, w.eval_items, w.world
    model.eval()
    per_rank = math.ceil(len(items) / world)
    mine = list(range(w.rank, len(items), world))
    real_rows = len(mine)
    mine += [mine[0]] * (per_rank - len(mine))
    collate = w.task.collate(w.tokenizer)
    outputs, loss_sum, rows = [], 0.0, 0
    bs = w.cfg.per_device_eval_batch_size
    plain = strategies.unwrap(model)  # DDP's wrapper has no generate(); FSDP2's module does
    with torch.no_grad():
        for start in range(0, per_rank, bs):
            chunk = mine[start : start + bs]
            batch = to_device(collate([items[i] for i in chunk]), w.device)
            with w.autocast():
                loss, out = w.task.eval_outputs(plain, batch, w.cfg, w.tokenizer)
            keep = max(0, min(len(chunk), real_rows - start))
            outputs.append({k: v[:keep] for k, v in out.items()})
            loss_sum += float(loss) * keep
            rows += keep
    gathered = [None] * world
    if world > 1:
        dist.all_gather_object(gathered, outputs)
    else:
        gathered = [outputs]
    total_loss, total_rows = over_ranks([loss_sum, rows], w.device)
    model.train()
    metrics = w.task.compute_metrics([o for rank_out in gathered for o in rank_out])
    return {
        "eval/loss": total_loss / max(total_rows, 1),
        **{f"eval/{k}": v for k, v in metrics.items()},
    }
