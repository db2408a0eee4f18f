"""What a rank measures about itself, for the benchmark, the study and every run: the model
state it holds, its peak memory, and the share of the device's peak it computes at (MFU)."""

from __future__ import annotations

import resource

import torch

# Dense peak TFLOP/s per GPU by name fragment: (bf16/fp16 tensor cores, fp32).
PEAK_TFLOPS = {
    "H200": (989.0, 67.0), "H100": (989.0, 67.0), "A100": (312.0, 19.5),
    "A30": (165.0, 10.3), "A10": (125.0, 31.2), "L40": (181.0, 90.5),
    "V100": (125.0, 15.7), "RTX 6000": (130.5, 16.3), "T4": (65.0, 8.1),
    "P100": (18.7, 9.3),
}  # fmt: skip


def _local_bytes(tensor) -> int:
    if tensor is None:
        return 0
    if hasattr(tensor, "to_local"):  # FSDP2 DTensor: this rank's shard only
        tensor = tensor.to_local()
    return tensor.numel() * tensor.element_size()


def model_state_bytes(model, optimizer) -> int:
    """Parameters + gradients + optimizer state held by this rank."""
    params = list(model.parameters())
    total = sum(_local_bytes(p) for p in params)
    # Each trained parameter's gradient (same shape and dtype as its shard), held from the
    # backward pass to the end of the step.
    total += sum(_local_bytes(p) for p in params if p.requires_grad)
    for state in optimizer.state.values():
        total += sum(_local_bytes(v) for v in state.values() if torch.is_tensor(v))
    return total


def peak_memory_bytes(device: torch.device) -> int:
    """CUDA's max allocated on a GPU; the process's peak resident memory on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def peak_flops(device: torch.device, precision: str) -> float | None:
    """The card's dense peak FLOP/s at this precision; None on CPU or an unknown card."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for fragment, (low, fp32) in PEAK_TFLOPS.items():
        if fragment in name:
            return (fp32 if precision == "fp32" else low) * 1e12
    return None


def mfu(model, padded_tokens: float, seconds: float, device, precision: str, world: int) -> float:
    """Model FLOPs utilisation: training FLOPs ~ 6 x parameters x tokens computed (forward +
    backward, dense layers, padding included), over the peak of every rank's device; NaN where
    the peak is unknown (CPU)."""
    peak = peak_flops(device, precision)
    if not peak or seconds <= 0:
        return float("nan")
    params = sum(p.numel() for p in model.parameters())  # FSDP2 DTensors: global numel
    return (6 * params * padded_tokens / seconds) / (peak * world)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
