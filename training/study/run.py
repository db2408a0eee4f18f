"""Running a study: one cluster for every cell, the probe of cells not measured yet, the plan
fitted to the budget and printed, the study's MLflow run and record, then each cell through
`make train`'s own path (runner.plan and runner.run: the same loop, evaluation, checkpoints and
MLflow run, here a child of the study's), and the report at the end.

Nothing is written before the plan holds: a study whose cells do not fit ends with one line
and leaves no record or MLflow run (the probe tracks nothing)."""

from __future__ import annotations

import time
from pathlib import Path

from core.errors import UserError
from core.paths import reports_root
from training import cluster, lifecycle, runner, tracking
from training.progress import console
from training.study import probe, record, report, results
from training.study.plan import EXPERIMENT, StudyPlan, check_capacity, fit, show

RESUME_HINT = "make study RESUME=1"


def _start_parent(tracker, p: StudyPlan, experiment_id: str) -> str:
    s = p.settings
    return tracker.start_run(
        experiment_id,
        p.study_id,
        tags=tracking.run_tags("study", p.cells[0].cfg.profile, hardware=p.target.hardware),
        params={**{f"study.{k}": v for k, v in s.to_record().items()}, "cells": len(p.cells)},
        documents={"study/explicit.json": p.explicit},
    )


def _new_record(p: StudyPlan, parent: str) -> dict:
    return {
        "study_id": p.study_id,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "hardware": p.target.hardware,
        "explicit": p.explicit,
        "settings": p.settings.to_record(),
        "parent_run_id": parent,
        "report": str(report_folder(p)),
        "cells": {},
    }


def report_folder(p: StudyPlan) -> Path:
    return reports_root() / "study" / p.study_id.removeprefix("study-")


def _forget_unstarted(tracker, experiment_id: str, parent: str, planned, p: StudyPlan) -> None:
    """A study stopped while a cell's MLflow run was being made, before the cell's record:
    that run never trained, and the cell starts again in a new one."""
    if lifecycle.load(p.target, lifecycle.RUN, planned.cell.run_name(p.study_id)) is not None:
        return  # the cell continues its own run
    for child in tracker.children(experiment_id, parent, study_cell=planned.cell.key):
        tracker.delete(child.info.run_id)


def _run_cell(p: StudyPlan, planned, parent: str, rec: dict) -> None:
    entry = rec["cells"].setdefault(planned.cell.key, {})
    entry.update(status="running", started=time.time(), error="")
    record.write(p.target, p.study_id, rec)
    began = time.monotonic()
    plan = runner.plan(planned.cfg, {}, p.target, check_lease=False)
    plan.experiment, plan.parent_run_id = EXPERIMENT, parent
    plan.study, plan.resume_hint = p.study_id, RESUME_HINT
    plan.tags = {"study": p.study_id, "study_cell": planned.cell.key}
    try:
        outcome = runner.run(plan, started=began, keep_cluster=True)
    except runner.TrainingFailed as exc:  # a failed cell (OOM, a lost worker) is recorded
        entry.update(status="failed", error=str(exc)[:300])
        record.write(p.target, p.study_id, rec)
        console.print(f"[bold]{planned.cell.label()}[/] failed: {exc}")
        return
    entry.update(status="finished", run_id=outcome.run_id)
    record.write(p.target, p.study_id, rec)


def run(p: StudyPlan) -> Path:
    """Run (or continue) the study; returns its report folder."""
    target = p.target
    most = max(c.cell.workers for c in p.cells)
    gpus = cluster.start(most, target.tracking_uri)
    try:
        if target.in_job:
            import ray

            cpus = int(ray.cluster_resources().get("CPU", 0))
            check_capacity(most, gpus, cpus, "the stack's Ray cluster")
        probe.measure_unknown(p, gpus)
        seconds, why = fit(p)
        show(p, seconds, why, dry=False)
        todo = p.to_run()
        if not todo and not p.continuing:
            raise UserError(
                f"no cell fits the budget ({why}); raise STUDY_HOURS, fewer cells, or "
                "STUDY_PAST_END=1 to run them anyway (nothing was started)"
            )
        return _cells(p, todo, gpus)
    finally:
        cluster.stop()


def _cells(p: StudyPlan, todo: list, gpus: int) -> Path:
    target = p.target
    tracker = tracking.Tracker(target.tracking_uri)
    experiment_id = tracker.experiment(EXPERIMENT, target.artifact_root)
    rec = p.record
    with lifecycle.removed_on_failure(target.run_folder(p.study_id)):
        if rec is None:
            rec = _new_record(p, _start_parent(tracker, p, experiment_id))
        else:  # a new job or machine continues it: its tags say so
            tracker.set_tags(rec["parent_run_id"], tracking.provenance_tags())
        for c in p.cells:  # the plan's estimates, kept for a resume on the same hardware
            entry = rec["cells"].setdefault(c.cell.key, {})
            entry.update(
                estimate_s=c.estimate.seconds,
                estimate_source=c.estimate.source,
                estimate_parts=c.estimate.parts,
            )
            if c.done:  # its run finished, maybe just before the study was stopped
                entry.update(status="finished", run_id=c.run_id)
            elif not c.fits:
                entry["status"] = "left out"
        record.write(target, p.study_id, rec)
    parent = rec["parent_run_id"]
    tracker.running(parent)
    console.print(f"MLflow study run {parent}: {target.run_url(experiment_id, parent)}")
    try:
        for number, planned in enumerate(todo, 1):
            console.print(
                f"\n[bold]cell {number}/{len(todo)}[/]: {planned.cell.label()}, "
                f"estimate {planned.estimate.text()}"
            )
            _forget_unstarted(tracker, experiment_id, parent, planned, p)
            _run_cell(p, planned, parent, rec)
    except KeyboardInterrupt:
        tracker.finish(parent, "KILLED")
        console.print(
            f"study stopped. Finished cells are kept; continue with `{RESUME_HINT}` (the "
            "interrupted cell continues from its checkpoint)"
        )
        raise
    rows = results.collect(p, tracker, rec["cells"])
    folder = report.write(report_folder(p), p, rows, gpus)
    tracker.log_report(parent, folder, "report")
    unfinished = [r for r in rows if r["status"] != "finished"]
    console.print(report.table(rows))
    console.print(f"report: {folder / 'report.md'}")
    if unfinished:
        tracker.finish(parent, "KILLED", tags={"study.unfinished": len(unfinished)})
        console.print(
            f"{len(unfinished)} cell(s) did not run or failed; `{RESUME_HINT}` runs them "
            "(on a new or extended lease too)"
        )
    else:
        tracker.finish(parent, "FINISHED")
        record.mark_finished(target, p.study_id, report=str(folder))
    return folder
