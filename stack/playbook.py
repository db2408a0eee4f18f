"""Run an Ansible playbook with the project's Ansible venv: full output to a log file, the
current task on one status line, and a failure turned into one line naming the service."""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from core.errors import UserError
from core.paths import REPO_ROOT
from core.services import SERVICES

ANSIBLE_DIR = REPO_ROOT / "ansible"
ANSIBLE_VENV = Path(os.environ.get("ANSIBLE_VENV") or REPO_ROOT / ".venv-ansible")

TASK = re.compile(r"^TASK \[(?:(?P<role>[\w-]+) : )?(?P<name>.*)\] \*+$")
FATAL = re.compile(r"^fatal: \[(?P<host>[^\]]+)\]: (?:FAILED|UNREACHABLE)! => (?P<detail>.*)$")
RECAP = re.compile(r"^(?P<host>\S+)\s*: ok=\d+\s+changed=(?P<changed>\d+)\s+unreachable=\d+")
console = Console(stderr=True, highlight=False)


@dataclass
class Outcome:
    changed: int
    log: Path


def run(
    playbook: str, inventory: Path, log: Path, extra_vars: dict | None = None, what: str = ""
) -> Outcome:
    """Run ansible/<playbook>; raise UserError with the failing task's service on failure."""
    binary = ANSIBLE_VENV / "bin" / "ansible-playbook"
    if not binary.exists():
        raise UserError(f"no Ansible at {binary}: run `make ansible-venv` (make up does it)")
    cmd = [str(binary), "-i", str(inventory), str(ANSIBLE_DIR / playbook)]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",  # one failure = one line to parse
        "PATH": f"{ANSIBLE_VENV / 'bin'}:{os.environ.get('PATH', '')}",
    }
    role, task, failure, changed = "", "", None, 0
    with log.open("w") as out, console.status(what) as status:
        os.chmod(log, 0o600)
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=REPO_ROOT,
        )
        try:
            for line in proc.stdout:
                out.write(line)
                line = line.rstrip("\n")
                if m := TASK.match(line):
                    role, task = m["role"] or "", m["name"]
                    status.update(f"{what}: {task}")
                elif (m := FATAL.match(line)) and failure is None:
                    failure = (role, task, _message(m["detail"]))
                elif m := RECAP.match(line):
                    changed += int(m["changed"])
            proc.wait()
        except KeyboardInterrupt:
            proc.terminate()
            proc.wait()
            raise
    if proc.returncode != 0:
        if failure is None:
            raise UserError(f"{playbook} failed; its output is in {log}")
        role, task, message = failure
        known = SERVICES.get(role)
        service = known.title if known else "the stack"
        where = f"; its log: {service_log(role)}" if known and known.name_key else ""
        raise UserError(f"{service}: task '{task}' failed: {message}{where}; Ansible log: {log}")
    return Outcome(changed, log)


def service_log(role: str) -> str:
    """Where a local service writes its log: supervisor's file, or the systemd journal."""
    service = SERVICES[role]
    if Path("/run/systemd/system").is_dir():
        return f"journalctl -u {service.unit()}"
    return f"/var/log/supervisor/{service.program()}.log"


def _message(detail: str) -> str:
    """The gist of an Ansible failure on one line: a tool's last ERROR line, else its msg."""
    try:
        result = json.loads(detail)
    except json.JSONDecodeError:
        return detail[:300]
    text = result.get("msg") or result.get("stderr") or result.get("module_stderr") or ""
    if isinstance(text, list):
        text = " ".join(map(str, text))
    errors = [line for line in str(text).splitlines() if line.startswith(("ERROR", "FATAL"))]
    text = errors[-1] if errors else str(text)
    return " ".join(text.split())[:300] or "see the log"
