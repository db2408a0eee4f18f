"""Where a run's model and tokenizer come from, and loading them in a worker.

The driver resolves the source once: a hub id (workers load it themselves), a local model
folder, or for `smoke` a tiny model of the task's architecture that the driver builds into the
run folder (config, seeded initial weights, a tokenizer trained on the run's data)."""

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
    location: str  # hub id or local folder
    kind: str  # "hub", "folder" or "built"

    def describe(self) -> str:
        return {
            "hub": f"hub model {self.location}",
            "folder": f"local model {self.location}",
            "built": "model built from config (smoke)",
        }[self.kind]


def resolve(task: Task, cfg: TrainConfig) -> ModelSource | None:
    """The model source, checked; None means 'build the tiny smoke model'."""
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
        return None
    require_hub(f"model {task.hub_model}")
    return ModelSource(task.hub_model, "hub")


def build_smoke(
    task: Task,
    train: pd.DataFrame,
    seed: int,
    labels: list[str],
    folder: Path,
    size: str = "tiny",
    seq_len: int = 0,
) -> ModelSource:
    """A model of the task's architecture from a config: tiny, or the seed model's own size,
    with a tokenizer trained on the training data (inputs, and targets for seq2seq)."""
    import torch  # here, not at the top: only the smoke model's builder needs it in the driver

    from training.tokenizer import train_tokenizer

    texts = train[task.text_column].tolist()
    if task.kind == "seq2seq":
        texts += train[task.target_column].tolist()
    tokenizer = train_tokenizer(texts, task.tokenizer_style())
    config = task.tiny_config(tokenizer) if size == "tiny" else task.seed_config(tokenizer)
    if task.kind == "classification":
        config.num_labels = len(labels)
    # Room for smoke_seq_len's long rows; XLNet reports -1 (no limit) and refuses the setter.
    if 0 < getattr(config, "max_position_embeddings", -1) < seq_len:
        config.max_position_embeddings = seq_len
    torch.manual_seed(seed)
    model = task.model_class().from_config(config)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(folder)
    model.save_pretrained(folder)
    return ModelSource(str(folder), "built")


def packed(folder: Path) -> dict[str, bytes]:
    """A model folder's files by name, to send to workers on other hosts."""
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


def unpack(files: dict[str, bytes], folder: Path) -> None:
    for name, content in files.items():
        (folder / name).write_bytes(content)


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
