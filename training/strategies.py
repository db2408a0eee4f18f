"""Data-parallel strategies over the project's own training loop.

- ddp:  every rank holds the whole model; gradients are all-reduced (DistributedDataParallel).
- fsdp: PyTorch FSDP2 (`fully_shard`), per transformer block then the root: each rank holds
        1/N of parameters, gradients and optimizer state, on CPU (gloo) and GPU (NCCL) alike.
"""

from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist
from torch import nn


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks of a Hugging Face transformer (encoder and decoder layers)."""
    blocks = []
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and name.rsplit(".", 1)[-1] in ("layer", "layers"):
            blocks.extend(module)
    return blocks


def wrap(model: nn.Module, strategy: str, device: torch.device, mixed_dtype: torch.dtype | None):
    """Move the model to its device and wrap it for the strategy."""
    model.to(device)
    if world_size() == 1 and strategy == "ddp":
        return model
    if strategy == "ddp":
        ids = [device.index] if device.type == "cuda" else None
        # Some architectures leave parameters without a gradient in a plain forward (XLNet's
        # mask and segment embeddings: fakenews), which DDP otherwise refuses at the second
        # step; Hugging Face's Trainer looks for them by default too.
        return nn.parallel.DistributedDataParallel(
            model, device_ids=ids, find_unused_parameters=True
        )
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = (
        MixedPrecisionPolicy(param_dtype=mixed_dtype, reduce_dtype=torch.float32)
        if mixed_dtype is not None
        else MixedPrecisionPolicy()
    )
    for block in transformer_blocks(model):
        fully_shard(block, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    return model


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def gradient_sync(model: nn.Module, sync: bool):
    """Skip the gradient all-reduce / reduce-scatter on accumulation micro-steps."""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        return contextlib.nullcontext() if sync else model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2 module
        model.set_requires_gradient_sync(sync)
    return contextlib.nullcontext()
