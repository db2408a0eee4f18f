"""The stack CLI's answers to bad input and to commands that need a stack: one line, exit 2,
no traceback, nothing written. (The stack itself is exercised in tests/stack/.)"""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import run_cli


def run_stack(state_dir, *args: str, **settings: str) -> subprocess.CompletedProcess:
    return run_cli(state_dir, *args, timeout=60, module="stack", **settings)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: ")
    return line


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"CLOUD": "aws"}, "CLOUD=aws is not a target; use one of local, sim, chameleon"),
        ({"STACK_NAME": "../x"}, "STACK_NAME='../x' is not usable"),
        ({"STACK_NAME": "embedded"}, "STACK_NAME='embedded' is not usable"),
    ],
)
def test_bad_stack_choice_is_one_line(state_dir, settings, expected):
    line = one_error_line(run_stack(state_dir, "up", **settings))
    assert expected in line
    assert not state_dir.exists()


def test_status_and_down_without_a_stack_say_so(state_dir):
    status = run_stack(state_dir, "status")
    assert status.returncode == 0 and "no stack 'local': start one with `make up`" in status.stdout
    down = run_stack(state_dir, "down")
    assert down.returncode == 0 and "nothing to take down" in down.stdout
    assert not state_dir.exists()


def test_backup_needs_a_running_stack(state_dir):
    line = one_error_line(run_stack(state_dir, "backup"))
    assert "is not up; `make up` first" in line


@pytest.mark.parametrize("action", ["logs", "cancel"])
def test_job_commands_need_a_stack(state_dir, action):
    line = one_error_line(run_cli(state_dir, action, "train-classify-1"))
    assert "no stack is up" in line
