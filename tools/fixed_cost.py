"""The fixed cost of a smoke `make train`: its wall time minus its training steps, side by side.

    .venv-train/bin/python tools/fixed_cost.py                     # this checkout, 3 rounds
    .venv-train/bin/python tools/fixed_cost.py --floor /tmp/old .  # an older checkout, this
                                                           # one, and Ray Train alone (below)

Each round runs `python -m training train TASK=classify` in every checkout given, one after the
other, each in a fresh state folder (so MLflow's store is made anew, as on a first run). The
training steps are timed from the progress lines: from the line of step 0 to the line of the
last step, evaluations in between counted as work. `--floor` also times a Ray Train run whose
training function does nothing, on the embedded cluster `make train` starts: what every run
pays before and after its own work. Rounds alternate so that a machine slowing down or speeding
up weighs on every checkout alike; the medians are printed at the end."""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STEP = re.compile(r"step (\d+)/(\d+)")

FLOOR = """
import tempfile
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from training import cluster

def nothing(config):
    pass

cluster.start(1, "sqlite:///" + tempfile.mkdtemp() + "/mlflow.db")
run = RunConfig(name="floor", storage_path=tempfile.mkdtemp())
TorchTrainer(nothing, scaling_config=ScalingConfig(num_workers=1), run_config=run).fit()
cluster.stop()
"""


def smoke_train(checkout: Path) -> tuple[float, float]:
    """(wall time, training steps) of one smoke run of `checkout`, in seconds."""
    with tempfile.TemporaryDirectory(prefix="fixed-cost-") as state:
        env = {**os.environ, "STACK_DIR": state, "PYTHONPATH": str(checkout)}
        started = time.monotonic()
        first = last = None
        command = [sys.executable, "-u", "-m", "training", "train", "TASK=classify"]
        with subprocess.Popen(
            command,
            cwd=checkout,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ) as proc:
            for line in proc.stdout:
                if match := STEP.search(line):
                    now = time.monotonic() - started
                    first = now if first is None else first
                    last = now if match.group(1) == match.group(2) else last
        wall = time.monotonic() - started
    if proc.returncode != 0 or first is None or last is None:
        raise SystemExit(f"the run of {checkout} failed (exit {proc.returncode})")
    return wall, last - first


def floor() -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", FLOOR], cwd=REPO, check=True, capture_output=True)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkouts", nargs="*", type=Path, default=[REPO])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--floor", action="store_true", help="also time Ray Train alone")
    args = parser.parse_args()
    checkouts = [c.resolve() for c in args.checkouts]
    fixed: dict[str, list[float]] = {str(c): [] for c in checkouts}
    if args.floor:
        fixed["Ray Train alone"] = []
    for round_ in range(1, args.rounds + 1):
        for checkout in checkouts:
            wall, steps = smoke_train(checkout)
            fixed[str(checkout)].append(wall - steps)
            print(
                f"round {round_} {checkout}: wall {wall:.1f} s, steps {steps:.1f} s, "
                f"fixed {wall - steps:.1f} s",
                flush=True,
            )
        if args.floor:
            fixed["Ray Train alone"].append(floor())
            print(
                f"round {round_} Ray Train alone: {fixed['Ray Train alone'][-1]:.1f} s", flush=True
            )
    for name, values in fixed.items():
        print(
            f"{name}: fixed cost median {statistics.median(values):.1f} s "
            f"(min {min(values):.1f}, max {max(values):.1f}, {len(values)} runs)"
        )


if __name__ == "__main__":
    main()
