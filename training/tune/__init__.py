"""`make tune`: a Ray Tune search over the project's training loop, scheduled by ASHA.

Each trial runs the loop directly in its Tune trial on one worker (one GPU, or a few cores):
no `TorchTrainer` nested inside a trial, so a small machine never waits for CPUs that a
nested trainer's workers hold (ray-project/ray#54305). Every checkpoint of a trial carries a
fresh evaluation, which ASHA compares at the training step (`step`) to stop weak trials early.

MLflow: one parent run per search (the space, then the best trial's config and metric) and one
child run per trial (`mlflow.parentRunId`). The best config lands in
`reports/tune/<search>/best.yaml`, which `make train CONFIG=<file>` takes as is. Checkpoints
and Tune's own state go to the runs storage, so `RESUME=1` continues an interrupted search
without training its finished trials again.

The package, by concern: `space` (the space-file language), `plan` (checks and resume),
`trial` (one trial and its child run), `search` (driving Ray Tune), `results` (outcomes,
`best.yaml`, the table). A space file (`SPACE=<yaml>`) overrides the defaults:

    num_samples: 10                 # trials (TUNE_SAMPLES=N overrides)
    metric: accuracy                # the task's own metric (default) or `loss`
    space:                          # setting: {loguniform|uniform|randint: [low, high]},
      learning_rate: {loguniform: [1.0e-5, 1.0e-3]}   # {choice: [a, b, ...]} or a fixed value
      per_device_train_batch_size: {choice: [16, 32, 64]}
      optim: {choice: [adamw, sgd]}
    scheduler: {grace_period: 20, reduction_factor: 2}  # ASHA, in training steps
    resources: {cpus: 2, gpus: 1}   # per trial; default from the machine
"""

from training.tune.plan import SearchPlan, plan
from training.tune.search import run
from training.tune.space import build_spec

__all__ = ["SearchPlan", "build_spec", "plan", "run"]
