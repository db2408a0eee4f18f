"""One trial of a search: its MLflow child run (found again when a resumed trial continues),
then the training loop on the trial's one worker."""

from __future__ import annotations

from dataclasses import dataclass

from training import tracking
from training.spec import WorkerSpec


@dataclass
class TrialSetup:
    """What every trial shares; Tune passes it (and the data frames) to each trial."""

    spec: WorkerSpec  # the base of each trial's worker spec (its data comes separately)
    experiment_id: str
    parent_run_id: str
    search_id: str
    cpus: float


def _child_run(tracker: tracking.Tracker, setup: TrialSetup, trial_id: str, cfg: dict) -> str:
    found = tracker.children(
        setup.experiment_id, setup.parent_run_id, **{"tune.trial_id": trial_id}
    )
    if found:
        run_id = found[0].info.run_id
        tracker.running(run_id)
        return run_id
    return tracker.start_run(
        setup.experiment_id,
        cfg["run_name"],
        tags=tracking.run_tags(
            cfg["task"],
            cfg["profile"],
            strategy=cfg["strategy"],
            workers=1,
            **{"tune.trial_id": trial_id},
        ),
        params=cfg,
        parent=setup.parent_run_id,
    )


def run_trial(params: dict, setup: TrialSetup, frames: dict) -> None:
    """A Tune function trainable: the project's loop on this trial's one worker."""
    import ray.tune
    import torch

    from training.loop import train_loop_per_worker

    trial_id = ray.tune.get_context().get_trial_id()
    cfg = {**setup.spec.cfg, **params, "run_name": f"{setup.search_id}-{trial_id}"}
    torch.set_num_threads(max(1, int(setup.cpus)))
    tracker = tracking.Tracker(setup.spec.tracking_uri)
    run_id = _child_run(tracker, setup, trial_id, cfg)
    spec = setup.spec.replace(cfg=cfg, data=frames, run_id=run_id, session="tune")
    train_loop_per_worker({"spec": spec})
    tracker.finish(run_id, "FINISHED", tags={"tune.outcome": "completed"})
