"""The training loop run by every Ray Train worker (and by each Tune trial): the project's own
torch loop around one `TrainStep`.

One loop for every task, strategy (DDP or FSDP) and device. It evaluates at each epoch end,
checkpoints at each epoch end, every `save_steps` and once before the stack's lease ends, and
resumes from the latest checkpoint exactly where it stopped."""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from torch.utils.data import DataLoader, DistributedSampler

from training import checkpoints, lease, measures, tracking
from training import session as sessions
from training.evaluation import evaluate
from training.phases import Phases
from training.spec import WorkerSpec
from training.step import TrainStep
from training.worker import setup

TELL_EVERY_S = 0.5  # the progress bar's pace for steps between logging steps


class ResumableSampler(DistributedSampler):
    """DistributedSampler that can skip the samples of batches already trained this epoch."""

    skip = 0

    def __iter__(self):
        indices = list(super().__iter__())
        return iter(indices[self.skip :])

    def __len__(self) -> int:
        return super().__len__() - self.skip


def train_loop_per_worker(config: dict) -> None:
    spec: WorkerSpec = config["spec"]
    session = sessions.for_spec(spec)
    rank, world = session.rank_world()
    # Only rank 0 writes to MLflow; its client (and MLflow's import) is made while the model
    # loads, not before it.
    tracker = None
    if rank == 0:
        pool = ThreadPoolExecutor(max_workers=1)
        tracker = pool.submit(tracking.Tracker, spec.tracking_uri)
        pool.shutdown(wait=False)
    w = setup(spec, rank, world, session.device())
    cfg, task = w.cfg, w.task
    accumulation = cfg.gradient_accumulation_steps

    sampler = ResumableSampler(
        w.train_items, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed, drop_last=True
    )
    batches_per_epoch = len(sampler) // cfg.per_device_train_batch_size
    steps_per_epoch = batches_per_epoch // accumulation
    if steps_per_epoch == 0:
        raise ValueError(
            f"one epoch holds {batches_per_epoch} batches per worker, fewer than "
            f"gradient_accumulation_steps={accumulation}"
        )
    total_steps = cfg.max_steps if cfg.max_steps > 0 else steps_per_epoch * cfg.num_train_epochs
    epochs = math.ceil(total_steps / steps_per_epoch)
    train_step = TrainStep(w, total_steps)
    optimizer, scheduler = train_step.optimizer, train_step.scheduler

    progress = {"global_step": 0, "epoch": 0, "batch_in_epoch": 0, "pending": []}
    resumed = session.get_checkpoint()
    if resumed:
        with resumed.as_directory() as folder:
            progress = checkpoints.load(Path(folder), w.model, optimizer, scheduler, rank)
    buffer = tracking.MetricBuffer(tracker, spec.run_id, progress["pending"])
    hosts = _worker_hosts(world)
    if rank == 0 and spec.run_id:
        # Which hosts trained (a restart after a lost node may move workers): tagged each start.
        buffer.tracker.set_tags(spec.run_id, {"worker_hosts": ",".join(hosts)})
    if rank == 0 and resumed:
        buffer.flush()  # points saved with the checkpoint but maybe not yet in MLflow
        buffer.tracker.set_tags(spec.run_id, {"resumed_from_step": progress["global_step"]})
    step = progress["global_step"]
    last_eval: dict = {}
    phases = Phases()  # rank 0's, sent to the driver with the last progress event
    # This process's share of the run: what a later run's time is estimated from.
    tally = {"steps": 0, "evaluations": 0, "checkpoints": 0, "samples": 0.0, "padded": 0.0}
    first_step = step
    lease_guard = lease.Guard(lease.parse_end(spec.lease_end))

    def save_checkpoint(epoch: int, batch_in_epoch: int, metrics: dict, final: bool) -> None:
        with phases.timed("checkpoints"):
            _save(epoch, batch_in_epoch, metrics, final)

    def _save(epoch: int, batch_in_epoch: int, metrics: dict, final: bool) -> None:
        tally["checkpoints"] += 1
        folder = checkpoints.new_folder()
        state = {
            "global_step": step,
            "epoch": epoch,
            "batch_in_epoch": batch_in_epoch,
            "total_steps": total_steps,
            "pending": buffer.pending if rank == 0 else [],
        }
        checkpoints.save(folder, w.model, optimizer, scheduler, state, rank)
        if final:
            checkpoints.export_model(folder, w.model, task.model_class(), w.tokenizer, rank)
        session.report({**metrics, "step": step, "epoch": epoch}, folder)
        if rank == 0:
            buffer.flush()

    told = [0.0]  # when the last event went to the driver

    def tell(kind: str, **fields) -> None:
        if rank != 0 or spec.progress is None:
            return
        # Each event is a round trip to the driver's node (across the network on a stack): a
        # step with nothing to say but its number goes at most every TELL_EVERY_S.
        quiet = kind == "train" and "loss" not in fields and step < total_steps
        if quiet and time.monotonic() - told[0] < TELL_EVERY_S:
            return
        told[0] = time.monotonic()
        spec.progress.put_nowait({"kind": kind, "step": step, "total": total_steps, **fields})

    tell("start", epochs=epochs)
    w.model.train()
    started = time.perf_counter()
    collate = task.collate(w.tokenizer)
    batches_in_epoch = steps_per_epoch * accumulation
    for epoch in range(progress["epoch"], epochs):
        sampler.set_epoch(epoch)
        skip_batches = progress["batch_in_epoch"] if epoch == progress["epoch"] else 0
        sampler.skip = skip_batches * cfg.per_device_train_batch_size
        loader = DataLoader(
            w.train_items,
            batch_size=cfg.per_device_train_batch_size,
            sampler=sampler,
            collate_fn=collate,
            drop_last=True,
        )
        batch_index, micro = skip_batches, []
        for batch in loader:
            if step >= total_steps or batch_index >= batches_in_epoch:
                break
            micro.append(batch)
            batch_index += 1
            if len(micro) < accumulation:
                continue
            with phases.timed("training"):
                train_step(micro)
            micro = []
            step += 1
            if step % cfg.logging_steps == 0 or step == total_steps:
                with phases.timed("training"):
                    window = train_step.read()
                tally["samples"] += window["rows"]
                tally["padded"] += window["padded"]
                metrics = {
                    "train/loss": window["loss"],
                    "train/learning_rate": train_step.learning_rate(),
                    "train/samples_per_s": window["rows"]
                    / max(time.perf_counter() - started, 1e-9),
                }
                if rank == 0:
                    buffer.add(metrics, step)
                tell("train", loss=metrics["train/loss"], epoch=epoch)
                started = time.perf_counter()
            else:
                tell("train", epoch=epoch)
            if step == total_steps or batch_index >= batches_in_epoch:
                break  # evaluation and the checkpoint follow below
            if step % cfg.logging_steps == 0 and lease_guard.due(w.device):
                save_checkpoint(epoch, batch_index, {}, final=False)
                tell("note", text=lease_guard.message(step))  # the driver's (the job's) log
                if rank == 0:
                    buffer.tracker.set_tags(spec.run_id, {"lease_checkpoint_step": step})
            elif cfg.save_steps and step % cfg.save_steps == 0:
                mid_eval = {}
                if session.evaluates_every_checkpoint:
                    with phases.timed("evaluation"):
                        mid_eval = evaluate(w)
                    tally["evaluations"] += 1
                    buffer.add(mid_eval, step)
                save_checkpoint(epoch, batch_index, mid_eval, final=False)
        with phases.timed("evaluation"):
            last_eval = evaluate(w)
        tally["evaluations"] += 1
        if rank == 0:
            buffer.add(last_eval, step)
        tell("eval", metrics=last_eval)
        done = step >= total_steps
        save_checkpoint(epoch + 1, 0, last_eval, final=done)
        if done:
            break
    tally["steps"] = step - first_step
    tell("done", phases=phases.seconds, measures=_measures(w, train_step, tally, phases))


def _measures(w, train_step: TrainStep, tally: dict, phases: Phases) -> dict:
    """What this process did and the most any rank held (a collective: every rank calls it)."""
    import torch.distributed as dist

    from training.worker import over_ranks

    state = measures.model_state_bytes(w.model, train_step.optimizer)
    most = over_ranks([state, measures.peak_memory_bytes(w.device)], w.device, dist.ReduceOp.MAX)
    seconds = phases.seconds.get("training", 0.0)
    padded = tally.pop("padded")
    return {
        **tally,
        "model_state_bytes_per_rank": most[0],
        "peak_mem_bytes_per_rank": most[1],
        "mfu": measures.mfu(w.model, padded, seconds, w.device, w.precision, w.world),
    }


def _worker_hosts(world: int) -> list[str]:
    """Each worker's host name, in rank order."""
    import socket

    if world == 1:
        return [socket.gethostname()]
    import torch.distributed as dist

    names: list = [None] * world
    dist.all_gather_object(names, socket.gethostname())
    return names
