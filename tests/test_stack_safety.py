"""What `make down PURGE=1`, STACK_DIR and two commands at once may never do: delete what the
user did not confirm, adopt a folder the stack did not make, run two commands on one stack.

Ansible is a stand-in here (a script in place of `ansible-playbook` that records what it was
asked and, for backup.yml, writes a backup folder): these tests are about the CLI's decisions,
and the real playbooks are exercised in tests/stack/. The CLI runs in a network namespace of
its own (`unshare -n`), so other programs on this machine's ports do not look like the stack's.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, cli_env

STANDIN = """#!/bin/sh
# Stand-in for ansible-playbook: records its arguments; backup.yml writes a sealed backup folder
# as seal.sh does (STANDIN_DAMAGE=1: a dump changes after sealing, as a bad copy would).
echo "$@" >> "$STANDIN_LOG"
case "$*" in
  *backup.yml*) dir=$(echo "$*" | sed 's/.*"stack_backup_dir": "\\([^"]*\\)".*/\\1/')
                i=0; while [ -e "$dir/20260101-00000$i" ]; do i=$((i+1)); done
                dir="$dir/20260101-00000$i"
                mkdir -p "$dir/files" && echo data > "$dir/files/one" && cd "$dir" &&
                echo dump > tracking.dump && echo dump > auth.dump &&
                for a in artifacts run-records; do tar -C files -czf $a.tar.gz one; done &&
                rm -r files && for a in artifacts run-records; do
                  echo "objects.$a.tar.gz=1" >> manifest.txt; done &&
                sha256sum -- *.dump *.tar.gz manifest.txt > SHA256SUMS &&
                if [ -n "$STANDIN_DAMAGE" ]; then echo more >> tracking.dump; fi;;
  *site.yml*) sleep "${STANDIN_SLEEP:-0}";;
esac
echo "localhost : ok=1    changed=0    unreachable=0    failed=0"
"""

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="runs the CLI as root in a network namespace of its own",
)


@pytest.fixture
def standin(tmp_path: Path) -> dict[str, str]:
    venv = tmp_path / "ansible-standin"
    (venv / "bin").mkdir(parents=True)
    script = venv / "bin" / "ansible-playbook"
    script.write_text(STANDIN)
    script.chmod(0o755)
    return {"ANSIBLE_VENV": str(venv), "STANDIN_LOG": str(tmp_path / "ansible.log")}


def stack_cmd(state_dir: Path, command: str, settings: dict) -> list:
    return ["unshare", "-n", sys.executable, "-m", "stack", command]


def run_stack(state_dir: Path, command: str, **settings: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        stack_cmd(state_dir, command, settings),
        cwd=REPO,
        env=cli_env(state_dir, **settings),
        text=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


def refused(proc: subprocess.CompletedProcess) -> str:
    """The one error line a refused command ends with (no traceback, exit 2)."""
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ")
    return last


def make_stack(state_dir: Path, state: str = "up") -> Path:
    """A stack folder as `make up` leaves it (the marker, the record, secrets, logs)."""
    folder = state_dir / "local"
    (folder / "secrets").mkdir(parents=True)
    (state_dir / ".chameleon-mlops-state").touch()
    (folder / ".chameleon-mlops-state").touch()
    (folder / "stack.json").write_text(json.dumps({"name": "local", "cloud": "local",
                                                   "state": state}))  # fmt: skip
    (folder / "secrets" / "mlflow_admin_password").write_text("x")
    (folder / "logs").mkdir()
    return folder


def snapshot(root: Path) -> dict[str, tuple]:
    return {
        str(p.relative_to(root)): (p.stat().st_mode, p.is_symlink())
        for p in [root, *root.rglob("*")]
    }


def asked(standin: dict) -> str:
    log = Path(standin["STANDIN_LOG"])
    return log.read_text() if log.exists() else ""


# --- PURGE, CONFIRM --------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["false", "no", "0"])
def test_purge_false_deletes_nothing(tmp_path, standin, value):
    state_dir = tmp_path / "state"
    folder = make_stack(state_dir)
    proc = run_stack(state_dir, "down", PURGE=value, **standin)
    assert proc.returncode == 0, proc.stderr
    assert "its data is kept" in proc.stdout
    assert '"stack_purge": false' in asked(standin)
    assert "backup.yml" not in asked(standin)
    assert (folder / "secrets" / "mlflow_admin_password").read_text() == "x"


@pytest.mark.parametrize("value", ["maybe", "y", "on", "2"])
def test_purge_takes_only_yes_or_no(tmp_path, standin, value):
    state_dir = tmp_path / "state"
    make_stack(state_dir)
    before = snapshot(state_dir)
    proc = run_stack(state_dir, "down", PURGE=value, CONFIRM="local", **standin)
    line = refused(proc)
    assert f"PURGE must be 1 or 0 (yes/no, true/false), got '{value}'" in line
    assert len(proc.stderr.strip().splitlines()) == 1
    assert asked(standin) == "" and snapshot(state_dir) == before


@pytest.mark.parametrize("confirm", [None, "other"])
def test_purge_without_confirmation_lists_and_deletes_nothing(tmp_path, standin, confirm):
    state_dir = tmp_path / "state"
    make_stack(state_dir)
    before = snapshot(state_dir)
    extra = {"CONFIRM": confirm} if confirm else {}
    proc = run_stack(state_dir, "down", PURGE="1", **extra, **standin)
    line = refused(proc)
    assert "nothing was deleted; confirm with CONFIRM=local" in line
    for item in ("databases", "buckets", "checkpoints", "run records", "secrets", "state folder"):
        assert item in proc.stderr
    assert asked(standin) == "" and snapshot(state_dir) == before


def test_confirmed_purge_backs_up_and_deletes_only_what_the_stack_wrote(tmp_path, standin):
    state_dir = tmp_path / "state"
    folder = make_stack(state_dir)
    (folder / "notes.txt").write_text("mine")
    proc = run_stack(state_dir, "down", PURGE="yes", CONFIRM="local", **standin)
    assert proc.returncode == 0, proc.stderr
    assert "backup.yml" in asked(standin) and '"stack_purge": true' in asked(standin)
    assert (state_dir / "backups" / "local" / "20260101-000000" / "tracking.dump").exists()
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    assert "what the stack did not write there: notes.txt" in proc.stdout


def test_a_purge_whose_backup_cannot_be_verified_deletes_nothing(tmp_path, standin):
    state_dir = tmp_path / "state"
    folder = make_stack(state_dir)
    before = snapshot(folder)
    proc = run_stack(state_dir, "down", PURGE="1", CONFIRM="local", STANDIN_DAMAGE="1", **standin)
    line = refused(proc)
    assert "backups/local/20260101-000000 cannot be verified" in line, line
    assert "tracking.dump does not match its checksum" in line, line
    assert "nothing was deleted and the stack still runs" in line, line
    assert "down.yml" not in asked(standin)
    assert before.items() <= snapshot(folder).items()  # (the lock and inventory are new)
    assert (folder / "secrets" / "mlflow_admin_password").read_text() == "x"
    assert json.loads((folder / "stack.json").read_text())["state"] == "up"
    # The backup stays for a look; `make backup` checks the same way and says so too.
    assert (state_dir / "backups" / "local" / "20260101-000000" / "tracking.dump").exists()


# --- make restore ----------------------------------------------------------------------------
def sealed_backup(tmp_path: Path, standin: dict, state_dir: Path, **settings) -> Path:
    """A backup folder as `make backup` leaves one (through the stand-in)."""
    proc = run_stack(state_dir, "backup", **settings, **standin)
    assert proc.returncode == (2 if settings else 0), proc.stdout + proc.stderr
    return state_dir / "backups" / "local" / "20260101-000000"


@pytest.mark.parametrize(
    ("backup", "expected"),
    [
        (None, "BACKUP= names the backup to restore"),
        ("missing", "BACKUP=missing is not a folder"),
        ("damaged", "cannot be verified: tracking.dump does not match its checksum"),
    ],
)
def test_restore_refuses_a_missing_or_damaged_backup_and_changes_nothing(
    tmp_path, standin, backup, expected
):
    state_dir = tmp_path / "state"
    make_stack(state_dir)
    settings = {}
    if backup == "damaged":
        settings["BACKUP"] = str(sealed_backup(tmp_path, standin, state_dir, STANDIN_DAMAGE="1"))
    elif backup:
        settings["BACKUP"] = backup
    asked_before = asked(standin)
    proc = run_stack(state_dir, "restore", **settings, **standin)
    assert expected in refused(proc)
    assert asked(standin) == asked_before  # restore.yml never ran


def test_restore_asks_first_and_backs_the_current_data_up(tmp_path, standin):
    state_dir = tmp_path / "state"
    make_stack(state_dir)
    sealed_backup(tmp_path, standin, state_dir)
    before = asked(standin)
    line = refused(run_stack(state_dir, "restore", BACKUP="20260101-000000", **standin))
    assert "no terminal to ask on: nothing was changed; confirm with CONFIRM=local" in line
    assert asked(standin) == before  # neither a safety backup nor a restore
    line = refused(
        run_stack(state_dir, "restore", BACKUP="20260101-000000", CONFIRM="other", **standin)
    )
    assert "CONFIRM='other' is not the stack's name" in line
    proc = run_stack(state_dir, "restore", BACKUP="20260101-000000", CONFIRM="local", **standin)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = asked(standin)[len(before) :].splitlines()
    assert "backup.yml" in calls[0] and "restore.yml" in calls[1]  # the safety backup first
    assert "the current data is backed up first" in proc.stdout
    assert (state_dir / "backups" / "local" / "20260101-000001" / "SHA256SUMS").exists()


def test_restore_takes_a_backup_by_its_folder_name(tmp_path, standin):
    state_dir = tmp_path / "state"
    make_stack(state_dir)
    sealed_backup(tmp_path, standin, state_dir)
    proc = run_stack(state_dir, "restore", BACKUP="20260101-000000", CONFIRM="local", **standin)
    # The stand-in stack has no services to report on, but restore.yml ran with the folder.
    assert "restore.yml" in asked(standin), proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stderr
    assert "restored " in proc.stdout and "20260101-000000 into stack local" in proc.stdout
    assert str(state_dir / "backups" / "local" / "20260101-000000") in asked(standin)


# --- the state folder ------------------------------------------------------------------------
def usr_like(root: Path) -> Path:
    for sub in ("bin", "lib", "share", "local/bin", "local/lib"):
        (root / sub).mkdir(parents=True)
    (root / "bin" / "tool").write_text("#!/bin/sh\n")
    (root / "local" / "bin" / "mine").write_text("#!/bin/sh\n")
    return root


@pytest.mark.parametrize(
    ("command", "settings"),
    [("up", {}), ("down", {}), ("down", {"PURGE": "1", "CONFIRM": "local"}), ("backup", {})],
)
def test_a_folder_the_stack_did_not_make_is_refused(tmp_path, standin, command, settings):
    usr = usr_like(tmp_path / "usr")
    before = snapshot(usr)
    line = refused(run_stack(usr, command, STACK_NAME="local", **settings, **standin))
    assert "which the stack did not make; point STACK_DIR at a new or empty folder" in line
    assert snapshot(usr) == before and asked(standin) == ""


def test_an_unmarked_stack_folder_is_refused(tmp_path, standin):
    state_dir = tmp_path / "state"
    (state_dir / "local" / "bin").mkdir(parents=True)
    (state_dir / ".chameleon-mlops-state").touch()
    before = snapshot(state_dir)
    line = refused(run_stack(state_dir, "up", **standin))
    assert "exists but the stack did not make it" in line
    assert snapshot(state_dir) == before and asked(standin) == ""


@pytest.mark.parametrize("which", ["STACK_DIR", "stack folder"])
def test_a_symlinked_state_folder_is_refused(tmp_path, standin, which):
    real = tmp_path / "real"
    make_stack(real)
    if which == "STACK_DIR":
        (tmp_path / "link").symlink_to(real)
        state_dir = tmp_path / "link"
    else:
        state_dir = tmp_path / "state"
        state_dir.mkdir()
        (state_dir / ".chameleon-mlops-state").touch()
        (state_dir / "local").symlink_to(real / "local")
    before = snapshot(real)
    for command, settings in [("up", {}), ("down", {"PURGE": "1", "CONFIRM": "local"})]:
        line = refused(run_stack(state_dir, command, **settings, **standin))
        assert "is a symlink" in line
    assert snapshot(real) == before and asked(standin) == ""


# --- one machine, one local stack -------------------------------------------------------------
def test_a_second_local_stack_is_refused_until_the_first_is_purged(tmp_path, standin):
    state_dir = tmp_path / "state"
    # The stand-in configures nothing, so `up` stops at the health check: the services are
    # the first stack's from the moment its `up` reached them.
    first = run_stack(state_dir, "up", STACK_NAME="first", HEALTH_TIMEOUT="0", **standin)
    assert "site.yml" in asked(standin), first.stdout + first.stderr
    line = refused(run_stack(state_dir, "up", STACK_NAME="second", **standin))
    assert "belong to stack 'first'" in line and "one machine holds one local stack" in line
    assert not (state_dir / "second").exists() and asked(standin).count("site.yml") == 1
    # Down keeps the data, so the services are still the first stack's.
    down = run_stack(state_dir, "down", STACK_NAME="first", **standin)
    assert down.returncode == 0, down.stderr
    line = refused(run_stack(state_dir, "up", STACK_NAME="second", **standin))
    assert "belong to stack 'first'" in line
    # A purge (whose backup needs the stack up) deletes the data and frees the machine.
    record = json.loads((state_dir / "first" / "stack.json").read_text())
    (state_dir / "first" / "stack.json").write_text(json.dumps({**record, "state": "up"}))
    purge = run_stack(state_dir, "down", STACK_NAME="first", PURGE="1", CONFIRM="first", **standin)
    assert purge.returncode == 0, purge.stdout + purge.stderr
    second = run_stack(state_dir, "up", STACK_NAME="second", HEALTH_TIMEOUT="0", **standin)
    assert "belong to stack" not in second.stderr and asked(standin).count("site.yml") == 2


# --- one command at a time -------------------------------------------------------------------
def test_a_second_command_is_refused_while_one_runs_and_a_dead_ones_lock_is_taken_over(
    tmp_path, standin
):
    state_dir = tmp_path / "state"
    make_stack(state_dir, state="starting")  # an earlier `up` of this stack: its ports are ours
    first = subprocess.Popen(
        stack_cmd(state_dir, "up", {}),
        cwd=REPO,
        env=cli_env(state_dir, STANDIN_SLEEP="600", **standin),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        log = Path(standin["STANDIN_LOG"])
        while "site.yml" not in (log.read_text() if log.exists() else ""):
            assert first.poll() is None, "the first `make up` ended early"
            time.sleep(0.2)
        holder = json.loads((state_dir / "local" / "lock").read_text())
        for command in ("up", "down", "backup"):
            line = refused(run_stack(state_dir, command, **standin))
            assert f"`make up (local)` (PID {holder['pid']}) is running on this stack" in line
        assert asked(standin).count("site.yml") == 1  # the second never reached Ansible
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    proc = run_stack(state_dir, "backup", **standin)
    assert f"taking over the lock of `make up (local)` (PID {holder['pid']}, no longer running)" \
        in proc.stderr  # fmt: skip


# --- damaged state files -----------------------------------------------------------------------
DAMAGES = {
    "truncated": lambda text: text[: len(text) // 2],
    "not JSON": lambda text: "<html>gateway timeout</html>",
    "wrong types": lambda text: json.dumps({"name": ["local"], "cloud": 3, "state": {}}),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_record_is_one_line_and_down_still_works(tmp_path, standin, damage):
    state_dir = tmp_path / "state"
    folder = make_stack(state_dir)
    record = folder / "stack.json"
    record.write_text(DAMAGES[damage](record.read_text()))
    for command in ("status", "up", "backup"):
        proc = run_stack(state_dir, command, **standin)
        out = proc.stdout + proc.stderr
        assert "Traceback" not in out and f"{record} cannot be read" in out, (command, out)
        assert f"mv {record} {record}.bad" in out  # how to recover
    down = run_stack(state_dir, "down", **standin)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "down.yml" in asked(standin) and "taking the stack down from what can be read" in (
        down.stdout + down.stderr
    )
    assert (folder / "secrets" / "mlflow_admin_password").read_text() == "x"  # nothing lost


def test_a_record_of_an_older_version_is_read(tmp_path, standin):
    state_dir = tmp_path / "state"
    folder = make_stack(state_dir)
    old = {"name": "local", "cloud": "local", "state": "up", "updated": "2026-11-01T10:00:00+0000"}
    (folder / "stack.json").write_text(json.dumps(old))
    status = run_stack(state_dir, "status", **standin)
    assert "Traceback" not in status.stderr and "stack local (CLOUD=local): up" in status.stdout


def test_a_damaged_endpoints_file_is_one_line(tmp_path, standin):
    state_dir = tmp_path / "state"
    folder = make_stack(state_dir)
    (folder / "endpoints.json").write_text('{"mlflow_tracking_uri": ')
    proc = run_stack(state_dir, "status", **standin)
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out and "endpoints.json cannot be read" in out, out
    assert "`make up` writes it again" in out


def test_a_sim_purge_after_a_plain_down_is_refused_and_deletes_nothing(tmp_path, standin):
    state_dir = tmp_path / "state"
    folder = make_stack(state_dir, state="down")
    record = json.loads((folder / "stack.json").read_text())
    (folder / "stack.json").write_text(json.dumps({**record, "cloud": "sim"}))
    (folder / "hosts" / "head" / "fs" / "var" / "lib" / "postgresql").mkdir(parents=True)
    # The sim's own record as a plain `make down` leaves it: every host stopped.
    hosts = [{"name": n, "address": f"10.99.0.{i}", "netns": f"stack-local-{n}", "init": None}
             for i, n in ((1, "head"), (2, "worker-1"))]  # fmt: skip
    (folder / "sim.json").write_text(json.dumps({
        "stack_name": "local", "subnet": "10.99.0.0/24", "bridge_netns": "stack-local-net",
        "controller_link": "local-sim", "controller_address": "10.99.0.254", "hosts": hosts,
    }))  # fmt: skip
    before = snapshot(state_dir)
    line = refused(run_stack(state_dir, "down", PURGE="1", CONFIRM="local", **standin))
    assert "PURGE=1 backs up MLflow's data before deleting it" in line
    assert "run `make up`, then `make down PURGE=1`" in line
    assert before.items() <= snapshot(state_dir).items() and asked(standin) == ""
