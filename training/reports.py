"""What every report (`make bench`, `make study`) shares: numbers formatted for a table, the
hardware and versions it ran on, and a Markdown table."""

from __future__ import annotations

import math
import os
import platform


def fmt(value, digits: int = 3) -> str:
    """A number as a table shows it: `digits` significant digits, "-" for NaN."""
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.{digits}g}"
    return str(value)


def mib(value) -> str:
    """Bytes as MiB, "-" when not measured."""
    return "-" if not isinstance(value, (int, float)) or value != value else f"{value / 2**20:.1f}"


def hardware(gpus: int) -> dict:
    """The machine and the versions a report's numbers were measured with."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    info = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "gpus": gpus,
        "torch": torch.__version__,
        "ray": installed("ray"),
        "transformers": installed("transformers"),
        "python": platform.python_version(),
    }
    if gpus and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def markdown_table(head: list[str], rows: list[list]) -> list[str]:
    """Lines of a Markdown table."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return lines
