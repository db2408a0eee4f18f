"""Driving a search: the MLflow parent run and the search record, per-trial resources, Ray Tune
with ASHA (new or restored), then the results."""

from __future__ import annotations

import os

from core.errors import UserError
from core.paths import reports_root
from training import cluster, lifecycle, storage, tracking
from training.progress import console
from training.spec import WorkerSpec
from training.tune import results
from training.tune.plan import SearchPlan
from training.tune.space import SearchSpec
from training.tune.trial import TrialSetup, run_trial


def _start_parent(tracker: tracking.Tracker, p: SearchPlan, experiment_id: str) -> str:
    params = {
        "num_samples": p.spec.num_samples,
        "metric": p.spec.metric,
        "mode": p.spec.mode,
        "scheduler": "asha",
        "scheduler.time_attr": "step",
        "scheduler.max_t": p.max_t,
        "scheduler.grace_period": p.grace_period,
        "scheduler.reduction_factor": p.spec.reduction_factor,
        **{f"space.{k}": d.describe() for k, d in p.spec.space.items()},
    }
    return tracker.start_run(
        experiment_id,
        p.search_id,
        tags=tracking.run_tags(
            p.task.name,
            p.cfg.profile,
            **{"tune.search": "asha"},
            model_source=p.source.describe(),
            data_source=p.splits.source,
        ),
        params=params,
        documents={"search/config.json": p.cfg.to_dict(), "data/manifest.json": p.splits.manifest},
    )


def _record(p: SearchPlan, parent_run_id: str) -> dict:
    return {
        "config": p.cfg.to_dict(),
        "explicit": p.explicit,
        "space_file": p.spec.raw,
        "num_samples": p.spec.num_samples,
        "parent_run_id": parent_run_id,
        "manifest": p.splits.manifest,
        "source": lifecycle.source_fields(p.source),
    }


def _resources(spec: SearchSpec) -> dict[str, float]:
    import ray

    cores = int(ray.cluster_resources().get("CPU", 1))
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if spec.gpus is not None and spec.gpus > gpus:
        raise UserError(
            f"resources.gpus={spec.gpus:g} per trial, but this cluster has {gpus} GPU(s); "
            "lower it in the space file"
        )
    if spec.cpus is not None and spec.cpus > cores:
        raise UserError(
            f"resources.cpus={spec.cpus:g} per trial, but this cluster has {cores} CPU(s); "
            "lower it in the space file"
        )
    # GPU hosts: one GPU per trial with its share of the cores; CPU hosts: up to four trials
    # side by side (one on a 2-core machine leaves a core for the other and the driver).
    trial_gpus = spec.gpus if spec.gpus is not None else (1 if gpus else 0)
    if spec.cpus is not None:
        trial_cpus = spec.cpus
    elif gpus:
        trial_cpus = max(1, cores // gpus)
    else:
        trial_cpus = max(1, cores // 4)
    return {"CPU": trial_cpus, "GPU": trial_gpus}


def run(p: SearchPlan) -> dict:
    """Run (or continue) the search; returns the best trial's settings and metric."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    target, cfg, task, spec = p.target, p.cfg, p.task, p.spec
    tracker = tracking.Tracker(target.tracking_uri)
    experiment_id = tracker.experiment(task.name, target.artifact_root)
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "5")  # Tune's own state, for RESUME
    # Ctrl-C reaches the trials too (one process group), which would end them as errors that
    # Tune's own handler reports as a finished search: let it stop the search here instead.
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    cluster.start(1, target.tracking_uri)
    resources = _resources(spec)

    folder = target.run_folder(p.search_id)
    parent_run_id = p.parent_run_id
    with lifecycle.removed_on_failure(folder):
        if parent_run_id is None:
            parent_run_id = _start_parent(tracker, p, experiment_id)
            lifecycle.write(target, lifecycle.SEARCH, p.search_id, _record(p, parent_run_id))
    url = target.run_url(experiment_id, parent_run_id)
    console.print(
        f"[bold]{task.name}[/] search [bold]{p.search_id}[/] · profile {cfg.profile} · "
        f"{spec.num_samples} trials · ASHA on {spec.metric} ({spec.mode}), steps "
        f"{p.grace_period}..{p.max_t} · per trial {resources['CPU']:g} CPU, "
        f"{resources['GPU']:g} GPU · {p.source.describe()}"
    )
    for key, dim in spec.space.items():
        console.print(f"  {key}: {dim.describe()}")
    console.print(f"MLflow parent run {parent_run_id}: {url}")

    base = WorkerSpec.build(
        cfg, p.splits.label_names, p.source, None, tracking_uri=target.tracking_uri
    )
    setup = TrialSetup(
        spec=base.replace(cfg={"resume": False}),
        experiment_id=experiment_id,
        parent_run_id=parent_run_id,
        search_id=p.search_id,
        cpus=resources["CPU"],
    )
    frames = {"train": p.splits.train, "validation": p.splits.validation}
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, setup=setup, frames=frames), resources
    )
    storage_path, storage_filesystem = storage.ray_storage(target.runs_root)
    run_config = tune.RunConfig(
        name=p.search_id,
        storage_path=storage_path,
        storage_filesystem=storage_filesystem,
        checkpoint_config=tune.CheckpointConfig(num_to_keep=cfg.save_total_limit),
        failure_config=tune.FailureConfig(max_failures=0),
        verbose=1,
    )
    path = f"{storage_path.rstrip('/')}/{p.search_id}"  # on storage_filesystem, if given
    tracker.running(parent_run_id)
    if p.continuing and tune.Tuner.can_restore(path, storage_filesystem=storage_filesystem):
        tuner = tune.Tuner.restore(
            path,
            trainable=trainable,
            resume_unfinished=True,
            resume_errored=True,
            storage_filesystem=storage_filesystem,
        )
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={k: d.sampler() for k, d in spec.sampled().items()},
            tune_config=tune.TuneConfig(
                metric=spec.metric,
                mode=spec.mode,
                num_samples=spec.num_samples,
                search_alg=BasicVariantGenerator(random_state=cfg.seed),
                scheduler=ASHAScheduler(
                    time_attr="step",
                    max_t=p.max_t,
                    grace_period=p.grace_period,
                    reduction_factor=spec.reduction_factor,
                    stop_last_trials=False,  # a trial that reaches max_t ends on its own
                ),
            ),
            run_config=run_config,
        )
    try:
        outcome = tuner.fit()  # Ctrl-C: Tune saves its state and returns what it has
        interrupted = outcome.num_terminated + outcome.num_errors < spec.num_samples
    except KeyboardInterrupt:
        interrupted = True
    finally:
        ray.shutdown()
    if interrupted:
        tracker.finish(parent_run_id, "KILLED")
        console.print(
            f"stopped. Finished trials and checkpoints are kept; continue with `make tune "
            f"TASK={task.name} RESUME=1` (or RUN_NAME={p.search_id} RESUME=1)"
        )
        raise KeyboardInterrupt

    results.finish_children(p, experiment_id, parent_run_id, outcome)
    scored = [r for r in outcome if r.error is None and spec.metric in (r.metrics or {})]
    if not scored:
        tracker.finish(parent_run_id, "FAILED")
        errors = [str(r.error).strip().splitlines()[-1] for r in outcome if r.error is not None]
        raise UserError(
            f"no trial of search {p.search_id} reported {spec.metric}"
            + (f" (first error: {errors[0]})" if errors else "")
            + f"; fix the cause and continue with RUN_NAME={p.search_id} RESUME=1"
        )
    best = outcome.get_best_result(metric=spec.metric, mode=spec.mode, scope="last")
    best_file = results.write_best(p, best, reports_root() / "tune" / p.search_id)
    value = float(best.metrics[spec.metric])
    best_trial = best.metrics["trial_id"]

    best_params = {f"best.{k}": best.config[k] for k in spec.sampled()}
    tracker.log_params(parent_run_id, {**best_params, "best.trial_id": best_trial})
    tracker.log_metrics(parent_run_id, {f"best.{spec.metric}": value})
    tracker.log_report(parent_run_id, best_file, "search")
    tracker.finish(parent_run_id, "FINISHED")
    lifecycle.mark_finished(target, lifecycle.SEARCH, p.search_id, best_file=str(best_file))

    console.print(results.summary_table(p, outcome, best_trial))
    settings = {k: best.config[k] for k in spec.sampled()}
    console.print(
        f"best trial [bold]{best_trial}[/]: {spec.metric} {value:.4f} with "
        + ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in settings.items()
        )
    )
    console.print(f"best config: {best_file}")
    console.print(f"train it:    make train CONFIG={best_file}")
    console.print(f"MLflow parent run: {url}")
