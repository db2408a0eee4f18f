"""Planning a study: the settings checked, the study to continue, every cell's config checked as
`make train` checks it (data, model, batches, precision, storage), each cell's estimate from
what is known without running anything, and the fit against the budget (the lease's end minus
the checkpoint guard, or STUDY_HOURS). Nothing is started or written here: a dry run is this
plan, printed."""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from core.errors import UserError
from training import data as datamod
from training import lease, lifecycle, models, runner, storage, tracking
from training.config import TrainConfig, parse_value
from training.progress import console
from training.settings import StudySettings
from training.study import estimate, record
from training.study.cells import Cell, Work, matrix, settings
from training.study.estimate import UNKNOWN, Estimate
from training.targets import Target
from training.tasks import TASKS

# Settings a study decides itself, and the variable that sets each instead.
AXES = {
    "strategy": "STUDY_STRATEGIES",
    "workers": "STUDY_WORKERS",
    "per_device_train_batch_size": "STUDY_BATCH",
    "max_steps": "STUDY_SAMPLES (max_steps would make the budget unequal across cells)",
}
EXPERIMENT = "study"  # the MLflow experiment of studies and their cells
# The design's batch sizes on GPUs; on CPU one, which keeps the default study to minutes.
GPU_BATCHES, CPU_BATCHES = [8, 16, 32], [16]


@dataclass
class PlannedCell:
    cell: Cell
    cfg: TrainConfig
    work: Work
    estimate: Estimate = UNKNOWN
    done: bool = False  # finished in an earlier attempt of the study
    run_id: str = ""  # its MLflow run, when done
    fits: bool = True  # within the budget (or STUDY_PAST_END=1)


@dataclass
class StudyPlan:
    study_id: str
    target: Target  # with the hardware the cells' runs are tagged with
    settings: StudySettings
    explicit: dict  # the user's settings, laid under every cell's own
    cells: list[PlannedCell]
    record: dict | None  # the record of the study being continued
    splits: dict = field(default_factory=dict)  # task -> data.Splits

    @property
    def continuing(self) -> bool:
        return self.record is not None

    def to_run(self) -> list[PlannedCell]:
        return [c for c in self.cells if not c.done and c.fits]


def _merged(layers: list[dict]) -> dict:
    merged: dict = {}
    for layer in layers:
        merged.update(layer)
    return merged


def refuse_axes(explicit: dict) -> None:
    for key, variable in AXES.items():
        if key in explicit:
            raise UserError(
                f"{key} is one of the study's axes; set it with {variable} instead of "
                f"{key.upper()}="
            )


def local_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def plan(layers: list[dict], target: Target, environ=None) -> StudyPlan:
    explicit = _merged(layers)
    refuse_axes(explicit)
    resume = bool(parse_value("resume", explicit.get("resume", "")))
    name, saved = record.find(target, str(explicit.get("run_name") or ""), resume)
    if saved is not None:
        explicit = saved["explicit"]  # the study's own settings; the budget is today's
        chosen = StudySettings.from_record(saved["settings"], environ)
        console.print(f"continuing study [bold]{name}[/]: its unfinished cells")
    else:
        chosen = StudySettings.read(environ, one_task=str(explicit.get("task") or ""))
    study_id = name or f"study-{time.strftime('%Y%m%d-%H%M%S')}"
    cell_base = {k: v for k, v in explicit.items() if k not in ("run_name", "resume", "task")}

    gpus = 0 if target.in_job else local_gpus()
    workers = chosen.workers or [w for w in (1, 2, 4) if w <= (gpus or os.cpu_count() or 1)]
    if not target.in_job:  # a stack's cluster is checked once the job has joined it
        check_capacity(max(workers), gpus, os.cpu_count() or 1, "this machine")
    batches = chosen.batches or (GPU_BATCHES if gpus else CPU_BATCHES)
    accumulation = int(runner.resolve_config([cell_base], target).gradient_accumulation_steps)
    cells = matrix(chosen.tasks, chosen.strategies, workers, batches, chosen.scaling, accumulation)
    # The cells' runs are tagged with the hardware they ran on: what later estimates match.
    target = dataclasses.replace(target, hardware=target.hardware or estimate.machine())

    registered = str(explicit.get("registered_model_name") or "")
    planned, splits = [], {}
    for cell in cells:
        layer = settings(cell, study_id, chosen.epochs, chosen.samples, registered)
        cfg = runner.resolve_config([cell_base, layer], target)
        if cell.task not in splits:  # a task's data and model are the same in all its cells
            splits[cell.task] = datamod.prepare(TASKS[cell.task], cfg)
            models.resolve(TASKS[cell.task], cfg)  # a model that cannot be had stops here
        rows = len(splits[cell.task].train)
        lifecycle.check_batches(cfg, rows)
        lifecycle.check_precision(cfg, target)
        run = lifecycle.load(target, lifecycle.RUN, cell.run_name(study_id)) or {}
        done = bool(run.get("finished"))
        planned.append(
            PlannedCell(cell, cfg, Work.of(cfg, rows), done=done, run_id=run.get("run_id", ""))
        )
    storage.check(target.runs_root)
    p = StudyPlan(study_id, target, chosen, explicit, planned, saved, splits)
    known_estimates(p)
    return p


def check_capacity(most: int, gpus: int, cores: int, where: str) -> None:
    """More workers than the cluster can place (one GPU, or one core, each) is refused."""
    room, unit = (gpus, "GPUs") if gpus else (cores, "CPU cores")
    if most > room:
        raise UserError(
            f"STUDY_WORKERS asks for {most} workers; {where} can place {room} ({room} {unit}, "
            f"one per worker): ask for {room} or fewer"
        )


def known_estimates(p: StudyPlan) -> None:
    """Each cell's estimate from what is known without running anything: the estimate the
    study recorded for it (same hardware), else an earlier finished run of the same speed key
    on the same hardware. The embedded store is not opened when it does not exist yet."""
    saved = (p.record or {}).get("cells", {})
    same_hardware = (p.record or {}).get("hardware") == p.target.hardware
    tracker = None
    if not p.target.embedded or _embedded_store(p.target).exists():
        tracker = tracking.Tracker(p.target.tracking_uri)
    for c in p.cells:
        entry = saved.get(c.cell.key, {})
        if same_hardware and entry.get("estimate_s") is not None:
            source = entry.get("estimate_source") or "recorded"
            c.estimate = Estimate(entry["estimate_s"], source, entry.get("estimate_parts", {}))
        elif tracker is not None:
            found = estimate.from_history(
                tracker,
                [EXPERIMENT, c.cell.task],
                lease.speed_key(c.cfg),
                p.target.hardware,
                c.work,
            )
            c.estimate = found or UNKNOWN


def _embedded_store(target: Target):
    return target.state_dir / "mlflow.db"


def budget(p: StudyPlan, now: datetime | None = None) -> tuple[float | None, str]:
    """Seconds the study may take from now, and what sets them; None: no limit."""
    now = now or datetime.now(UTC)
    limits = []
    end = lease.parse_end(p.target.lease_end)
    if end is not None:
        left = (end - now).total_seconds() - lease.GUARD_MINUTES * 60
        limits.append(
            (
                left,
                f"the lease's end ({end:%Y-%m-%d %H:%M} UTC) minus the "
                f"{lease.GUARD_MINUTES} min checkpoint guard",
            )
        )
    if p.settings.hours:
        limits.append((p.settings.hours * 3600, f"STUDY_HOURS={p.settings.hours:g}"))
    return min(limits) if limits else (None, "no lease and no STUDY_HOURS")


def fit(p: StudyPlan, now: datetime | None = None) -> tuple[float | None, str]:
    """Mark the cells that do not fit the budget, in order (a later, shorter cell may still
    fit); STUDY_PAST_END=1 keeps them all. Cells without an estimate are kept."""
    seconds, why = budget(p, now)
    used = 0.0
    for c in p.cells:
        if c.done:
            continue
        took = c.estimate.seconds or 0.0
        c.fits = seconds is None or p.settings.past_end or used + took <= seconds
        if c.fits:
            used += took
    return seconds, why


def show(p: StudyPlan, seconds: float | None, why: str, dry: bool) -> None:
    """The plan: the matrix, each cell's estimate, the total, the budget and what is left out."""
    s = p.settings
    budget_text = (
        f"{s.epochs} epoch(s) per cell"
        if s.epochs
        else f"{s.samples} training samples per cell"
        if s.samples
        else "each task's own epochs"
    )
    workers = sorted({c.cell.workers for c in p.cells})
    batches = sorted({c.cell.batch for c in p.cells})
    if dry:
        console.print("dry run: `make study` would run this (nothing started, written or tracked)")
    console.print(
        f"study [bold]{p.study_id}[/]: {', '.join(s.tasks)} x {', '.join(s.strategies)} x "
        f"workers {','.join(map(str, workers))} x batch {','.join(map(str, batches))}, "
        f"{s.scaling} scaling, {budget_text}, profile {p.cells[0].cfg.profile}; "
        f"{p.target.describe()}, {p.target.hardware}",
        soft_wrap=True,
    )
    total, running, unknown = 0.0, 0, 0
    for number, c in enumerate(p.cells, 1):
        mark = "done" if c.done else c.estimate.text() + ("" if c.fits else ", left out")
        if not c.done and c.fits:
            total += c.estimate.seconds or 0.0
            running += 1
            unknown += c.estimate.seconds is None
        console.print(f"  {number:3}  {c.cell.label():34} {c.work.steps:6} steps  {mark}")
    more = f" ({unknown} not measured yet)" if unknown else ""
    limit = "no limit" if seconds is None else estimate.duration(max(seconds, 0))
    console.print(
        f"  total: {estimate.duration(total)} for {running} cell(s){more}; budget: {limit} ({why})",
        soft_wrap=True,
    )
    if unknown:
        console.print(
            "  cells not measured yet are probed before the study starts (a few warm-up and "
            "timed steps per cell): a dry run starts nothing, so it estimates only from earlier "
            "runs on this hardware",
            soft_wrap=True,
        )
    for c in p.cells:
        if not c.done and not c.fits:
            console.print(
                f"  left out: {c.cell.label()} (about {estimate.duration(c.estimate.seconds)}) "
                "does not fit before the budget's end; STUDY_PAST_END=1 runs it anyway, "
                "`make study RESUME=1` on a new or extended lease runs it later",
                soft_wrap=True,
            )
