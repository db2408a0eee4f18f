"""Where the repository and its git-ignored folders are (each overridable by the environment)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def state_root() -> Path:
    """The state folder of every stack and of the embedded target: `.stack/` or STACK_DIR."""
    return Path(os.environ.get("STACK_DIR") or REPO_ROOT / ".stack").resolve()


def reports_root() -> Path:
    """Where bench and tune reports go: `reports/` in the repo, or REPORTS_DIR."""
    return Path(os.environ.get("REPORTS_DIR") or REPO_ROOT / "reports").resolve()


def machine_root() -> Path:
    """What the stack keeps about this machine itself (which stack its local services belong
    to): /var/lib/chameleon-mlops, or CHAMELEON_MLOPS_MACHINE_DIR."""
    return Path(os.environ.get("CHAMELEON_MLOPS_MACHINE_DIR") or "/var/lib/chameleon-mlops")
