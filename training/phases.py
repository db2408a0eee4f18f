"""Where a command's wall time goes: start-up (process start to the first training step),
training steps, evaluation, checkpoints and logging the model, printed at the end of a run."""

from __future__ import annotations

import time
from contextlib import contextmanager

PROCESS_START = time.monotonic()  # this module is imported at the CLI's start


class Phases:
    """Seconds per phase, added up over the run."""

    ORDER = ("start-up", "training", "evaluation", "checkpoints", "model logging")

    def __init__(self, started: float = PROCESS_START) -> None:
        self.started = started  # when the command (or a study's cell) began
        self.seconds: dict[str, float] = {}

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    @contextmanager
    def timed(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)

    def line(self) -> str:
        total = time.monotonic() - self.started
        shown = [
            f"{name} {self.seconds[name]:.1f} s" for name in self.ORDER if name in self.seconds
        ]
        other = total - sum(self.seconds.values())
        return "time: " + " · ".join(
            [*shown, f"other {max(other, 0):.1f} s", f"total {total:.1f} s"]
        )
