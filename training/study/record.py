"""A study's record, `runs/<study>/study.json` in the state folder beside its cells' own run
records: the settings it was started with, its MLflow run, and each cell's estimate, status
and measured row. `RESUME=1` continues the latest unfinished study from it: finished cells are
not run again, an interrupted cell continues from its checkpoint (its own run record)."""

from __future__ import annotations

import json

from core.errors import UserError
from training import lifecycle
from training.targets import Target

STUDY = lifecycle.Kind("study.json", "study", "study", continues_by_name=False)


def latest_unfinished(target: Target) -> str | None:
    runs = target.state_dir / "runs"
    records = list(runs.glob(f"*/{STUDY.file}")) if runs.is_dir() else []
    open_ = [p for p in records if not json.loads(p.read_text()).get("finished")]
    return max(open_, key=lambda p: p.stat().st_mtime).parent.name if open_ else None


def find(target: Target, name: str, resume: bool) -> tuple[str, dict | None]:
    """The study to continue (`RESUME=1`, `RUN_NAME=<study> RESUME=1`) and its record, or
    (name, None) for a new one; refuses what cannot continue in one line."""
    if resume and not name:
        name = latest_unfinished(target) or ""
        if not name:
            raise UserError(
                "RESUME=1: there is no unfinished study to continue; start one with `make study`"
            )
    record = lifecycle.load(target, STUDY, name) if name else None
    if resume and record is None:
        raise UserError(
            f"RESUME=1: study {name!r} has no record under {target.state_dir}; check "
            "RUN_NAME, or start a new study without RESUME"
        )
    if record is not None and record.get("finished"):
        raise UserError(
            f"study {name!r} already finished; its report is {record['report']}; pick a new "
            "RUN_NAME or drop it to start a fresh study"
        )
    if record is not None and not resume:
        raise UserError(f"study {name!r} exists; continue it with RESUME=1 or pick a new RUN_NAME")
    return name, record


def write(target: Target, name: str, record: dict) -> None:
    lifecycle.write(target, STUDY, name, record)


def mark_finished(target: Target, name: str, **fields) -> None:
    lifecycle.mark_finished(target, STUDY, name, **fields)
