"""What the user sees: a progress bar fed by rank 0 through a Ray queue, and a final table."""

from __future__ import annotations

import sys
import threading
import time
from queue import Empty

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

# Wide enough for the final tables when output goes to a file or CI log rather than a terminal.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)


class TrainingProgress:
    """Shows rank 0's step updates while `fit()` blocks the main thread."""

    def __init__(self, queue, title: str):
        self.queue = queue
        self.title = title
        # Not a terminal (a job's log, CI): a plain line every tenth of the run and per eval.
        self.plain = not console.is_terminal
        self.next_line = 0
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
            disable=self.plain,
        )
        self.task_id = self.bar.add_task(title, total=None, info="starting Ray workers")
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.loss = None
        self.started_at: float | None = None  # when rank 0 began its first step (monotonic)
        self.worker_phases: dict[str, float] = {}  # rank 0's seconds per phase, at the end
        self.worker_measures: dict[str, float] = {}  # steps, samples, memory, MFU (the end)

    def __enter__(self):
        self.bar.start()
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=5)
        self._drain()
        self.bar.stop()

    def _update(self, event: dict) -> None:
        if event["kind"] == "start" and self.started_at is None:
            self.started_at = time.monotonic()
        if event["kind"] == "done":
            self.worker_phases = event.get("phases", {})
            self.worker_measures = event.get("measures", {})
        if event["kind"] == "note":  # a line the run must say (the lease's checkpoint, ...)
            console.print(event["text"])
            return
        if event.get("loss") is not None:
            self.loss = event["loss"]
        info = f"loss {self.loss:.4f}" if self.loss is not None else ""
        if event["kind"] == "eval":
            shown = {k.removeprefix("eval/"): v for k, v in event["metrics"].items()}
            info = "eval " + " ".join(f"{k} {v:.3f}" for k, v in list(shown.items())[:3])
        elif event["kind"] == "start" and event["step"]:
            info = f"resumed at step {event['step']}"
        self.bar.update(self.task_id, total=event["total"], completed=event["step"], info=info)
        if self.plain and (event["kind"] != "train" or event["step"] >= self.next_line):
            console.print(f"{self.title} step {event['step']}/{event['total']} {info}")
            self.next_line = event["step"] + max(1, event["total"] // 10)

    def _drain(self) -> None:
        try:
            while True:
                self._update(self.queue.get_nowait())
        except Empty:
            pass
        except Exception:  # the queue actor is gone once Ray shuts down
            pass

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self._update(self.queue.get(timeout=0.5))
            except Empty:
                continue
            except Exception:
                return


def final_table(metrics: dict[str, float]) -> Table:
    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    return table
