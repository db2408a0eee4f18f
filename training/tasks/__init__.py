"""The task registry: every module in this folder that defines `TASK` is a task."""

from __future__ import annotations

import importlib
import pkgutil

from training.tasks.base import ClassificationTask, Seq2SeqTask, Task


def _discover() -> dict[str, Task]:
    found = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        task = getattr(module, "TASK", None)
        if isinstance(task, Task):
            found[task.name] = task
    return found


TASKS: dict[str, Task] = _discover()

__all__ = ["TASKS", "Task", "ClassificationTask", "Seq2SeqTask"]
