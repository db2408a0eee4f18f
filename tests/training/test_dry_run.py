"""`DRY_RUN=1`: the resolved plan is printed and nothing is started, written or tracked; bad
settings fail in the dry run exactly as they do for real."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import REPO, cli_env, run_cli


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("train", ["run a new run", "workers 1 x ddp"]),
        ("tune", ["search a new search", "trials 2, ASHA"]),
        ("bench", ["cells 2: ddp x1 b8, fsdp x1 b8"]),
    ],
)
def test_dry_run_prints_the_plan_and_leaves_nothing_behind(tmp_path, command, expected):
    state, reports = tmp_path / "state", tmp_path / "reports"
    result = run_cli(
        state,
        command,
        DRY_RUN="1",
        TASK="classify",
        TUNE_SAMPLES="2",
        BENCH_WORKERS="1",
        BENCH_BATCH="8",
        REPORTS_DIR=str(reports),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = " ".join(result.stdout.split())  # the plan's columns, whatever their width
    assert f"dry run: `make {command}` would run this" in out
    for line in expected:
        assert line in out, out
    assert "generated classify data (seed 42):" in out and "train rows (Business" in out
    assert "model built from config (smoke, tiny)" in out
    # no record, no MLflow store, no checkpoints, no report, no Ray session
    assert not state.exists() or not any(state.rglob("*")), list(state.rglob("*"))
    assert not reports.exists()


@pytest.mark.parametrize(
    ("command", "settings", "message"),
    [
        ("train", {"LEARNING_RATE": "2"}, "learning_rate must be in (0, 1)"),
        ("train", {"RESUME": "1"}, "RESUME=1: there is no earlier classify run"),
        ("tune", {"TUNE_SAMPLES": "0"}, "num_samples must be at least 1"),
        ("bench", {"BENCH_BATCH": "eight"}, "BENCH_BATCH='eight': 'eight' is not valid"),
        ("train", {"DRY_RUN": "maybe"}, "DRY_RUN must be 1 or 0"),
    ],
)
def test_bad_settings_fail_in_the_dry_run_as_for_real(tmp_path, command, settings, message):
    result = run_cli(tmp_path / "state", command, **{"DRY_RUN": "1", **settings})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), result.stderr


def test_make_passes_a_lower_case_setting_on(tmp_path):
    # What users type after `make train ...`: make hands every variable on in its own case.
    env = cli_env(tmp_path / "state", DRY_RUN="1", TASK="classify")
    proc = subprocess.run(
        ["make", "--no-print-directory", "train", "max_steps=7"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert " max_steps=7 " in " ".join(proc.stdout.split()) + " ", proc.stdout
