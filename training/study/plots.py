"""A study's plots, one panel per task: total time and speed-up vs workers per strategy (with
the ideal line), the final metric per strategy and worker count, time vs batch size, and
time-to-target per cell."""

from __future__ import annotations

import math
from pathlib import Path


def _finished(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["status"] == "finished"]


def _panels(plt, tasks: list[str]):
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 3.8), squeeze=False)
    return fig, dict(zip(tasks, axes[0], strict=True))


def _lines(ax, rows: list[dict], x: str, y: str, group: tuple[str, str]) -> None:
    keys = sorted({(r[group[0]], r[group[1]]) for r in rows})
    for a, b in keys:
        points = sorted(
            (r[x], r[y])
            for r in rows
            if (r[group[0]], r[group[1]]) == (a, b) and not math.isnan(r[y])
        )
        if points:
            label = f"{a} {'x' if group[1] == 'workers' else 'b'}{b}"
            style = "-" if a == "ddp" else "--"
            ax.plot([p[0] for p in points], [p[1] for p in points], style, marker="o", label=label)


def _save(fig, ax_by_task, folder: Path, name: str, xlabel: str, ylabel: str, xs) -> None:
    for task, ax in ax_by_task.items():
        ax.set_title(task)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_xticks(xs)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(folder / name, dpi=110)


def write(rows: list[dict], folder: Path) -> list[str]:
    """Write the plots into `folder`; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = _finished(rows)
    tasks = sorted({r["task"] for r in rows})
    workers = sorted({r["workers"] for r in rows})
    batches = sorted({r["batch_size"] for r in rows})
    by_task = {t: [r for r in done if r["task"] == t] for t in tasks}
    written = []

    for name, y, ylabel in (
        ("time.png", "wall_s", "total time (s)"),
        ("speedup.png", "speedup", "speed-up vs 1 worker"),
        ("metric.png", "metric_value", "final metric"),
    ):
        fig, axes = _panels(plt, tasks)
        for task, ax in axes.items():
            _lines(ax, by_task[task], "workers", y, ("strategy", "batch_size"))
            if y == "speedup":
                ax.plot(workers, workers, color="grey", linestyle=":", label="ideal")
            if y == "metric_value" and by_task[task]:
                ax.set_ylabel(by_task[task][0]["metric_name"])
        _save(fig, axes, folder, name, "workers", ylabel, workers)
        plt.close(fig)
        written.append(name)

    fig, axes = _panels(plt, tasks)
    for task, ax in axes.items():
        _lines(ax, by_task[task], "batch_size", "wall_s", ("strategy", "workers"))
    _save(fig, axes, folder, "batch.png", "per-device batch size", "total time (s)", batches)
    plt.close(fig)
    written.append("batch.png")

    reached = [r for r in done if not math.isnan(r.get("time_to_target_s", math.nan))]
    if reached:
        fig, ax = plt.subplots(figsize=(max(5, 0.5 * len(reached) + 2), 4))
        labels = [
            f"{r['task']} {r['strategy']} x{r['workers']} b{r['batch_size']}" for r in reached
        ]
        ax.bar(range(len(reached)), [r["time_to_target_s"] for r in reached])
        ax.set_xticks(range(len(reached)), labels, rotation=60, ha="right", fontsize="small")
        ax.set_ylabel("time to target (s)")
        fig.tight_layout()
        fig.savefig(folder / "time_to_target.png", dpi=110)
        plt.close(fig)
        written.append("time_to_target.png")
    return written
