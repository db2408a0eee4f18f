"""Where a run's model and tokenizer come from, and making them in a worker.

The driver resolves the source once: a hub id or a local model folder (workers load it
themselves), or for `smoke` a model of the task's architecture that every worker builds from a
config (seeded initial weights, a tokenizer built from the run's data): the same on every rank
and at every restart, with no file to write, read or ship to other hosts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from core.errors import UserError
from training.config import TrainConfig
from training.hub import require_hub
from training.tasks import Task


@dataclass
class ModelSource:
    # hub: a hub id; folder: a local model folder; smoke: the size to build ("tiny" or
    # "seed"); built: a folder the driver built a smoke model into (records made before
    # workers built it themselves)
    location: str
    kind: str

    def describe(self) -> str:
        return {
            "hub": f"hub model {self.location}",
            "folder": f"local model {self.location}",
            "smoke": f"model built from config (smoke, {self.location})",
            "built": "model built from config (smoke)",
        }[self.kind]


def resolve(task: Task, cfg: TrainConfig) -> ModelSource:
    """The model source, checked."""
    if cfg.model:
        folder = Path(cfg.model).expanduser()
        if folder.exists() or cfg.model.startswith((".", "/", "~")):
            if not (folder / "config.json").is_file():
                raise UserError(
                    f"MODEL={cfg.model} is not a model folder (no config.json there); pass a "
                    "folder written by save_pretrained, or a hub model id"
                )
            return ModelSource(str(folder.resolve()), "folder")
        require_hub(f"model {cfg.model}")
        return ModelSource(cfg.model, "hub")
    if cfg.profile == "smoke":
        return ModelSource(cfg.smoke_model, "smoke")
    require_hub(f"model {task.hub_model}")
    return ModelSource(task.hub_model, "hub")


def build_smoke(
    task: Task,
    train: pd.DataFrame,
    seed: int,
    labels: list[str],
    size: str = "tiny",
    seq_len: int = 0,
):
    """Tokenizer and model of the task's architecture from a config: tiny, or the seed model's
    own size, with a tokenizer built from the training data (inputs, and targets for seq2seq)
    and initial weights drawn from `seed`."""
    import torch

    from training.tokenizer import train_tokenizer

    texts = train[task.text_column].tolist()
    if task.kind == "seq2seq":
        texts += train[task.target_column].tolist()
    tokenizer = train_tokenizer(texts, task.tokenizer_style())
    config = task.tiny_config(tokenizer) if size == "tiny" else task.seed_config(tokenizer)
    if task.kind == "classification":
        config.num_labels = len(labels)
        config.id2label = dict(enumerate(labels))
        config.label2id = {name: i for i, name in enumerate(labels)}
    # Room for smoke_seq_len's long rows; XLNet reports -1 (no limit) and refuses the setter.
    if 0 < getattr(config, "max_position_embeddings", -1) < seq_len:
        config.max_position_embeddings = seq_len
    torch.manual_seed(seed)
    return tokenizer, task.model_class().from_config(config)


def build_or_load(
    task: Task, source: ModelSource, cfg: TrainConfig, labels: list[str], train: pd.DataFrame
):
    """A worker's tokenizer and base model: built for `smoke`, else loaded."""
    if source.kind == "smoke":
        return build_smoke(task, train, cfg.seed, labels, source.location, cfg.smoke_seq_len)
    return load(task, source, labels)


def load(task: Task, source: ModelSource, labels: list[str]):
    """Tokenizer and model, with the run's label mapping on a classifier's config."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source.location)
        kwargs = {}
        if task.kind == "classification":
            kwargs = {
                "num_labels": len(labels),
                "id2label": dict(enumerate(labels)),
                "label2id": {name: i for i, name in enumerate(labels)},
                "ignore_mismatched_sizes": True,  # a new head when the label set differs
            }
        model = task.model_class().from_pretrained(source.location, **kwargs)
    except (OSError, ValueError) as exc:
        raise UserError(
            f"could not load {source.describe()} ({str(exc).splitlines()[0]}); check MODEL"
        ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, model
