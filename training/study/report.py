"""A study's report in `reports/study/<stamp>/`: results.csv/json, report.md (a table per task,
each cell's estimate beside its measured time, and a reading that answers the design's three
questions in plain sentences), the plots, and the table printed at the end."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from rich.table import Table

from training.reports import fmt, hardware, markdown_table, mib
from training.study import plots
from training.study.results import COLUMNS

# The largest difference in the task's metric between DDP and FSDP (same workers and batch)
# that the reading calls "the same quality": smoke evaluations hold ~100-500 rows.
QUALITY_TOLERANCE = 0.01


def _ok(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["status"] == "finished" and r.get("wall_s", 0) > 0]


def _cell(r: dict) -> str:
    return f"{r['strategy']} x{r['workers']} b{r['batch_size']}"


def _span(values: list[float], form: str) -> str:
    low, high = min(values), max(values)
    return (
        form.format(low) if math.isclose(low, high) else f"{form.format(low)}-{form.format(high)}"
    )


def _scaling(task: str, rows: list[dict]) -> str:
    most = max(r["workers"] for r in rows)
    if most == 1:
        return f"{task}: only 1 worker was measured, so there is no speed-up to report."
    parts = []
    for strategy in sorted({r["strategy"] for r in rows}):
        at = [r for r in rows if r["strategy"] == strategy and r["workers"] == most]
        at = [r for r in at if not math.isnan(r["speedup"])]
        if at:
            parts.append(
                f"{strategy.upper()} on {most} workers ran "
                f"{_span([r['speedup'] for r in at], '{:.2f}')}x as fast as on 1 "
                f"(efficiency {_span([r['efficiency'] for r in at], '{:.0%}')})"
            )
    if not parts:
        return f"{task}: no {most}-worker cell has a finished 1-worker cell to compare with."
    return f"{task}: " + "; ".join(parts) + " (total time, over the batch sizes measured)."


def _strategies(task: str, rows: list[dict]) -> str:
    pairs = []
    for r in rows:
        if r["strategy"] != "fsdp":
            continue
        twin = [
            d
            for d in rows
            if d["strategy"] == "ddp"
            and (d["workers"], d["batch_size"]) == (r["workers"], r["batch_size"])
        ]
        if twin:
            pairs.append((twin[0], r))
    if not pairs:
        return f"{task}: DDP and FSDP were not both measured at the same workers and batch."
    ratios = [f["wall_s"] / d["wall_s"] for d, f in pairs]
    gaps = [(abs(f["metric_value"] - d["metric_value"]), d, f) for d, f in pairs]
    gap, d, f = max(gaps, key=lambda g: -1 if math.isnan(g[0]) else g[0])
    metric = d["metric_name"]
    time = (
        f"{task}: FSDP took {sum(ratios) / len(ratios):.2f}x DDP's total time on average "
        f"({_span(ratios, '{:.2f}')}x over {len(pairs)} matching cells)"
    )
    if math.isnan(gap):
        return time + f"; {metric} was not measured for both."
    if gap <= QUALITY_TOLERANCE:
        quality = (
            f"its final {metric} stayed within {gap:.3f} of DDP's in every cell, so no model "
            "quality was traded for speed"
        )
    else:
        quality = (
            f"its final {metric} differed from DDP's by up to {gap:.3f} ({_cell(f)}: "
            f"{f['metric_value']:.3f} vs {d['metric_value']:.3f}): more than "
            f"{QUALITY_TOLERANCE}, so check the quality before trading it for speed"
        )
    return f"{time}; {quality}."


def _batch(task: str, rows: list[dict]) -> str:
    if len({r["batch_size"] for r in rows}) < 2:
        return f"{task}: one batch size was measured, so there is no most efficient one to pick."
    best = min(rows, key=lambda r: r["wall_s"])
    same = [r for r in rows if (r["strategy"], r["workers"]) == (best["strategy"], best["workers"])]
    others = ", ".join(
        f"{r['wall_s']:.0f} s at batch {r['batch_size']} "
        f"({r['metric_name']} {r['metric_value']:.3f})"
        for r in sorted(same, key=lambda r: r["batch_size"])
        if r is not best
    )
    workers = f"{best['workers']} worker" + ("s" if best["workers"] > 1 else "")
    return (
        f"{task}: the most efficient batch size was {best['batch_size']} per device: "
        f"{best['strategy'].upper()} on {workers} trained in {best['wall_s']:.0f} s at it "
        f"({best['samples_per_s']:.0f} samples/s, {best['metric_name']} "
        f"{best['metric_value']:.3f}), against {others}."
    )


def reading(rows: list[dict]) -> list[str]:
    """Sentences that answer the design's three questions, then time-to-target and the
    estimates."""
    ok = _ok(rows)
    if not ok:
        return ["No cell finished; see the status column."]
    tasks = sorted({r["task"] for r in ok})
    lines = [
        "**Speed-up with more workers.** "
        + " ".join(_scaling(t, [r for r in ok if r["task"] == t]) for t in tasks)
    ]
    lines.append(
        "**DDP vs FSDP.** "
        + " ".join(_strategies(t, [r for r in ok if r["task"] == t]) for t in tasks)
    )
    lines.append(
        "**Batch size.** " + " ".join(_batch(t, [r for r in ok if r["task"] == t]) for t in tasks)
    )
    targeted = [r for r in ok if not math.isnan(r["target"])]
    if targeted:
        parts = []
        for task in sorted({r["task"] for r in targeted}):
            mine = [r for r in targeted if r["task"] == task]
            reached = [r for r in mine if not math.isnan(r["time_to_target_s"])]
            goal = f"{mine[0]['metric_name']} {mine[0]['target']:g}"
            if reached:
                first = min(reached, key=lambda r: r["time_to_target_s"])
                parts.append(
                    f"{task}: {_cell(first)} reached {goal} first, in "
                    f"{first['time_to_target_s']:.0f} s (step {first['steps_to_target']:.0f}); "
                    f"{len(mine) - len(reached)} of {len(mine)} cells never reached it."
                )
            else:
                parts.append(f"{task}: no cell reached {goal}.")
        lines.append("**Time to target.** " + " ".join(parts))
    errors = [r for r in ok if not math.isnan(r["estimate_error"])]
    if errors:
        within = [r for r in errors if abs(r["estimate_error"]) <= 0.2]
        long = [r for r in errors if r["wall_s"] >= 60]
        long_within = [r for r in long if abs(r["estimate_error"]) <= 0.2]
        long_text = (
            f"{len(long_within)} of {len(long)} cells of a minute or more"
            if long
            else "no cell lasted a minute"
        )
        lines.append(
            f"**Estimates.** {len(within)} of {len(errors)} cells took within 20% of their "
            f"estimate ({long_text})."
        )
    failed = [r for r in rows if r["status"] not in ("finished",)]
    if failed:
        lines.append(
            f"{len(failed)} cell(s) did not finish: "
            + "; ".join(
                f"{r['task']} {_cell(r)}: {r['status']}"
                + (f" ({r['error']})" if r["error"] else "")
                for r in failed
            )
        )
    return lines


HEAD = [
    "strategy", "workers", "batch", "global", "estimate s", "total s", "error",
    "training s", "samples/s", "speed-up", "efficiency", "peak MiB/rank", "state MiB/rank",
    "MFU", "eval loss", "metric", "to target s", "status",
]  # fmt: skip


def _table_row(r: dict) -> list:
    return [
        r["strategy"], r["workers"], r["batch_size"], r["global_batch"], fmt(r["estimate_s"]),
        fmt(r.get("wall_s", math.nan)), _percent(r["estimate_error"]),
        fmt(r.get("training_s", math.nan)),
        fmt(r.get("samples_per_s", math.nan), 4), fmt(r["speedup"]), fmt(r["efficiency"]),
        mib(r.get("peak_mem_bytes_per_rank")), mib(r.get("model_state_bytes_per_rank")),
        fmt(r.get("mfu", math.nan)), fmt(r.get("eval_loss", math.nan)),
        f"{r.get('metric_name', '')} {fmt(r.get('metric_value', math.nan))}".strip(),
        fmt(r.get("time_to_target_s", math.nan)), r["status"],
    ]  # fmt: skip


def _percent(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:+.0%}"


def write(folder: Path, p, rows: list[dict], gpus: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    info = hardware(gpus)
    s = p.settings
    (folder / "results.json").write_text(
        json.dumps(
            {
                "id": p.study_id,
                "hardware": info,
                "label": p.target.hardware,
                "settings": s.to_record(),
                "explicit": p.explicit,
                "rows": rows,
            },
            indent=2,
            default=str,
        )  # fmt: skip
    )
    images = plots.write(rows, folder)
    tables = []
    for task in sorted({r["task"] for r in rows}):
        mine = [r for r in rows if r["task"] == task]
        tables += [f"### {task}", "", *markdown_table(HEAD, [_table_row(r) for r in mine]), ""]
    budget = (
        f"{s.epochs} epoch(s)"
        if s.epochs
        else f"{s.samples} samples"
        if s.samples
        else "each task's own epochs"
    )
    text = [
        f"# Study {p.study_id}",
        "",
        f"- Hardware and versions: {', '.join(f'{k} {v}' for k, v in info.items())} "
        f"({p.target.hardware})",
        f"- Cells: {', '.join(s.tasks)} x {', '.join(s.strategies)} x workers "
        f"{sorted({r['workers'] for r in rows})} x per-device batch "
        f"{sorted({r['batch_size'] for r in rows})}; "
        f"{s.scaling} scaling ("
        + (
            "the same per-device batch, so the global batch grows with the workers"
            if s.scaling == "weak"
            else "the same global batch, kept with gradient accumulation"
        )
        + f"); budget {budget} per cell.",
        "- Each cell is a `make train` run (a child run of the study's MLflow run). Total: the "
        "cell's wall time from its start to its model logged; training: the training steps "
        "alone (rank 0). Speed-up: the 1-worker cell's total time over this cell's (same task, "
        "strategy and batch); efficiency: speed-up / workers. Peak memory: CUDA max allocated on "
        "GPU, peak RSS on CPU. MFU on GPUs only. Time to target: from the cell's start to the "
        "first evaluation whose metric reaches STUDY_TARGET. Error: (estimate - total) / total.",
        "",
        "## Results",
        "",
        *tables,
        "## Reading",
        "",
        *[f"- {line}" for line in reading(rows)],
        "",
        " ".join(f"![{name[:-4]}]({name})" for name in images),
        "",
    ]
    (folder / "report.md").write_text("\n".join(text))
    return folder


def table(rows: list[dict]) -> Table:
    """The table printed at the end of `make study`."""
    shown = Table()
    for name in (
        "task",
        "cell",
        "estimate s",
        "total s",
        "samples/s",
        "speed-up",
        "metric",
        "status",
    ):
        shown.add_column(name, justify="left" if name in ("task", "cell", "status") else "right")
    for r in rows:
        shown.add_row(
            r["task"], _cell(r), fmt(r["estimate_s"]), fmt(r.get("wall_s", math.nan)),
            fmt(r.get("samples_per_s", math.nan), 4), fmt(r["speedup"]),
            fmt(r.get("metric_value", math.nan)), r["status"],
        )  # fmt: skip
    return shown
