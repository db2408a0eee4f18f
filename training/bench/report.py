"""`make bench`'s report: results.csv/json, report.md, PNG plots, the table printed at the end,
and the MLflow parent run of the matrix with a child run per cell."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from rich.table import Table

from core.paths import reports_root
from training.reports import fmt, hardware, markdown_table, mib

# The columns of results.csv, in order (docs/bench.md lists them).
COLUMNS = [
    "task", "strategy", "workers", "batch_size", "steps", "step_time_median_s",
    "step_time_p90_s", "samples_per_s", "tokens_per_s", "speedup", "efficiency",
    "model_state_bytes_per_rank", "peak_mem_bytes_per_rank", "mfu", "loss", "metric_name",
    "metric_value", "status", "error",
]  # fmt: skip


def reading(rows: list[dict]) -> list[str]:
    """A few sentences that say what the numbers show."""
    ok = [r for r in rows if r["status"] == "ok"]
    lines = []
    if not ok:
        return ["Every cell failed; see the error column."]
    best = max(ok, key=lambda r: r["samples_per_s"])
    lines.append(
        f"Highest throughput: {best['strategy']} on {best['workers']} worker(s) at "
        f"batch {best['batch_size']}, {best['samples_per_s']:.1f} samples/s."
    )
    top = max(r["workers"] for r in ok)
    if top > 1:
        at_top = [r for r in ok if r["workers"] == top and not math.isnan(r["efficiency"])]
        for strategy in sorted({r["strategy"] for r in at_top}):
            eff = [r["efficiency"] for r in at_top if r["strategy"] == strategy]
            lines.append(
                f"{strategy} at {top} workers keeps {min(eff):.0%}-{max(eff):.0%} of "
                "ideal scaling (efficiency = speed-up / workers)."
            )
        ddp = {(r["workers"], r["batch_size"]): r for r in ok if r["strategy"] == "ddp"}
        ratios = [
            r["model_state_bytes_per_rank"]
            / ddp[(r["workers"], r["batch_size"])]["model_state_bytes_per_rank"]
            for r in ok
            if r["strategy"] == "fsdp"
            and r["workers"] == top
            and (r["workers"], r["batch_size"]) in ddp
        ]
        if ratios:
            lines.append(
                f"FSDP holds {max(ratios):.2f}x DDP's model state per rank at {top} "
                f"workers (ideal 1/{top} = {1 / top:.2f}x): sharding is what buys "
                "memory, at the cost of extra communication per step."
            )
    metrics = {r["metric_name"] for r in ok}
    if metrics:
        values = [r["metric_value"] for r in ok if not math.isnan(r["metric_value"])]
        if values:
            lines.append(
                f"{'/'.join(sorted(metrics))} after the timed steps ranges "
                f"{min(values):.3f}-{max(values):.3f}: compare it with speed so that "
                "speed is not bought with quality (few steps: an early snapshot)."
            )
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        lines.append(
            f"{len(failed)} cell(s) failed: "
            + "; ".join(
                f"{r['strategy']} x{r['workers']} b{r['batch_size']}: {r['error']}" for r in failed
            )
        )
    return lines


def _plots(rows: list[dict], folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok"]
    groups = sorted({(r["strategy"], r["batch_size"]) for r in ok})
    workers = sorted({r["workers"] for r in ok}) or [1]

    def series(strategy, batch, key):
        points = sorted(
            (r["workers"], r[key])
            for r in ok
            if r["strategy"] == strategy and r["batch_size"] == batch
        )
        return [p[0] for p in points], [p[1] for p in points]

    for key, name, ylabel in (
        ("samples_per_s", "throughput.png", "samples/s"),
        ("speedup", "speedup.png", "speed-up vs 1 worker"),
    ):
        fig, ax = plt.subplots(figsize=(6, 4))
        for strategy, batch in groups:
            x, y = series(strategy, batch, key)
            ax.plot(
                x,
                y,
                marker="o",
                linestyle="-" if strategy == "ddp" else "--",
                label=f"{strategy} b{batch}",
            )
        if key == "speedup":
            ax.plot(workers, workers, color="grey", linestyle=":", label="ideal")
        ax.set_xlabel("workers")
        ax.set_ylabel(ylabel)
        ax.set_xticks(workers)
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(folder / name, dpi=120)
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    labels = [f"{r['strategy']} x{r['workers']} b{r['batch_size']}" for r in ok]
    x = range(len(ok))
    ax.bar(
        [i - 0.2 for i in x],
        [r["model_state_bytes_per_rank"] / 2**20 for r in ok],
        0.4,
        label="model state (params+grads+optim)",
    )
    ax.bar(
        [i + 0.2 for i in x],
        [r["peak_mem_bytes_per_rank"] / 2**20 for r in ok],
        0.4,
        label="peak memory",
    )
    ax.set_xticks(list(x), labels, rotation=60, ha="right", fontsize="small")
    ax.set_ylabel("MiB per rank")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(folder / "memory.png", dpi=120)
    plt.close(fig)


def write(bench_id: str, rows: list[dict], cfg, gpus: int, warmup: int) -> Path:
    folder = reports_root() / "bench" / bench_id
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    info = hardware(gpus)
    (folder / "results.json").write_text(
        json.dumps(
            {
                "id": bench_id,
                "hardware": info,
                "config": cfg.to_dict(),
                "warmup_steps": warmup,
                "rows": rows,
            },
            indent=2,
            default=str,
        )
    )
    _plots(rows, folder)
    head = [
        "strategy",
        "workers",
        "batch",
        "step median s",
        "p90 s",
        "samples/s",
        "tokens/s",
        "speed-up",
        "efficiency",
        "state MiB/rank",
        "peak MiB/rank",
        "MFU",
        "loss",
        "metric",
        "status",
    ]
    body = [
        [
            r["strategy"],
            r["workers"],
            r["batch_size"],
            fmt(r.get("step_time_median_s")),
            fmt(r.get("step_time_p90_s")),
            fmt(r.get("samples_per_s"), 4),
            fmt(r.get("tokens_per_s"), 4),
            fmt(r["speedup"]),
            fmt(r["efficiency"]),
            mib(r.get("model_state_bytes_per_rank")),
            mib(r.get("peak_mem_bytes_per_rank")),
            fmt(r.get("mfu")),
            fmt(r.get("loss")),
            f"{r.get('metric_name', '')} {fmt(r.get('metric_value'))}",
            r["status"] if r["status"] == "ok" else f"failed: {r['error']}",
        ]
        for r in rows
    ]
    hw = ", ".join(f"{k} {v}" for k, v in info.items())
    text = [
        f"# Benchmark {bench_id}: {cfg.task}",
        "",
        f"- Hardware and versions: {hw}",
        f"- Profile {cfg.profile}, precision {cfg.precision}, {warmup} warm-up steps (not "
        f"timed) then {rows[0]['steps'] if rows else 0} timed optimizer steps per cell, "
        f"gradient accumulation {cfg.gradient_accumulation_steps}.",
        "- Step time: wall time of one optimizer step between a barrier and a device sync. "
        "Speed-up: samples/s over the 1-worker cell of the same strategy and batch. "
        "Model state: parameters + gradients + optimizer state held by one rank. Peak "
        "memory: CUDA max allocated on GPU, peak RSS on CPU. MFU (GPU only): 6 x parameters "
        "x tokens per step / step time, over the card's dense peak.",
        "",
        "## Results",
        "",
        *markdown_table(head, body),
        "",
        "## Reading",
        "",
        *[f"- {line}" for line in reading(rows)],
        "",
        "![throughput](throughput.png) ![speed-up](speedup.png) ![memory](memory.png)",
        "",
    ]
    (folder / "report.md").write_text("\n".join(text))
    return folder


def log(tracker, target, bench_id: str, rows: list[dict], folder: Path, cfg) -> None:
    """One MLflow parent run for the matrix, a child run per cell, the report as artifacts."""
    from training.tracking import run_tags

    experiment = tracker.experiment("bench", target.artifact_root)
    parent = tracker.start_run(
        experiment,
        f"bench-{bench_id}",
        tags=run_tags(cfg.task, cfg.profile),
        params={"cells": len(rows)},
    )
    for row in rows:
        child = tracker.start_run(
            experiment,
            f"{row['strategy']}-x{row['workers']}-b{row['batch_size']}",
            tags={
                **run_tags(cfg.task, cfg.profile, strategy=row["strategy"], status=row["status"]),
                "error": row["error"],  # "" for a cell that ran
            },
            params={key: row[key] for key in ("strategy", "workers", "batch_size", "steps")},
            parent=parent,
        )
        measured = {
            key: float(value)
            for key, value in row.items()
            if isinstance(value, (int, float))
            and key not in ("workers", "batch_size", "steps")
            and not (isinstance(value, float) and math.isnan(value))
        }
        tracker.log_metrics(child, measured)
        tracker.finish(child, "FINISHED" if row["status"] == "ok" else "FAILED")
    tracker.log_report(parent, folder, "report")
    tracker.finish(parent, "FINISHED")


def table(rows: list[dict]) -> Table:
    """The table printed at the end of `make bench`."""
    shown = Table()
    for name in (
        "strategy",
        "workers",
        "batch",
        "samples/s",
        "speed-up",
        "efficiency",
        "state MiB/rank",
        "peak MiB/rank",
        "loss",
        "metric",
        "status",
    ):
        shown.add_column(name, justify="right" if name not in ("strategy", "status") else "left")
    for r in rows:
        shown.add_row(
            r["strategy"],
            str(r["workers"]),
            str(r["batch_size"]),
            fmt(r.get("samples_per_s"), 4),
            fmt(r["speedup"]),
            fmt(r["efficiency"]),
            mib(r.get("model_state_bytes_per_rank")),
            mib(r.get("peak_mem_bytes_per_rank")),
            fmt(r.get("loss")),
            fmt(r.get("metric_value")),
            r["status"],
        )
    return shown
