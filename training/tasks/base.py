"""What a task is: its model class, data columns, label set, preprocessing, metrics and defaults.

Two kinds cover the three tasks: sequence classification (classify, fakenews) and
sequence-to-sequence generation (summarize). A new task is one module in this folder that
defines `TASK`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # imported where a batch is made or scored: the driver plans without it
    import torch


@dataclass(frozen=True)
class HubData:
    """Where the `local`/`full` profiles find the task's data on the Hugging Face hub."""

    dataset: str
    config: str | None = None
    text_column: str = "text"
    target_column: str = "label"
    local_train_rows: int = 5000  # the `local` profile takes a subset
    local_eval_rows: int = 500


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    hub_model: str
    hub_data: HubData
    text_column: str  # canonical column names inside the package
    target_column: str
    text_aliases: tuple[str, ...]
    target_aliases: tuple[str, ...]
    max_seq_length: int  # default input length for `local`/`full`
    primary_metric: str  # what the final table leads with and tuning optimises
    primary_mode: str  # "max" or "min"
    # per-profile defaults for TrainConfig keys
    defaults: dict[str, dict[str, Any]] = field(default_factory=dict)

    kind = "base"

    # --- data -------------------------------------------------------------------------------
    def generate(self, rows: int, seed: int) -> pd.DataFrame:
        """Seeded synthetic data with a learnable signal (the `smoke` profile)."""
        raise NotImplementedError

    def smoke_rows(self) -> int:
        return 1200

    # --- model ------------------------------------------------------------------------------
    def tiny_config(self, tokenizer) -> Any:
        """A small config of the seed model's architecture, for `smoke`."""
        raise NotImplementedError

    def seed_config(self, tokenizer) -> Any:
        """The seed model's own architecture and size, built offline (random weights)."""
        raise NotImplementedError

    def model_class(self):
        raise NotImplementedError

    def tokenizer_style(self) -> str:
        """Special-token layout of the seed model: 'bert', 'xlnet' or 'bart'."""
        raise NotImplementedError


@dataclass(frozen=True)
class ClassificationTask(Task):
    labels: tuple[str, ...] = ()
    kind = "classification"

    def model_class(self):
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification

    def encode(self, frame: pd.DataFrame, tokenizer, max_len: int, label2id) -> list[dict]:
        enc = tokenizer(
            frame[self.text_column].tolist(), truncation=True, max_length=max_len, padding=False
        )
        labels = [label2id[label] for label in frame[self.target_column]]
        return [
            {"input_ids": ids, "attention_mask": mask, "labels": label}
            for ids, mask, label in zip(
                enc["input_ids"], enc["attention_mask"], labels, strict=True
            )
        ]

    def collate(self, tokenizer):
        import torch

        def collate(batch: list[dict]) -> dict[str, torch.Tensor]:
            padded = tokenizer.pad(
                [
                    {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]}
                    for b in batch
                ],
                return_tensors="pt",
            )
            padded["labels"] = torch.tensor([b["labels"] for b in batch], dtype=torch.long)
            return dict(padded)

        return collate

    def eval_outputs(self, model, batch, cfg, tokenizer) -> tuple[torch.Tensor, dict]:
        """Loss and what metrics need from one evaluation batch."""
        import torch

        out = model(**batch)
        probs = torch.softmax(out.logits.float(), dim=-1)
        return out.loss, {"probs": probs.cpu().numpy(), "labels": batch["labels"].cpu().numpy()}

    def compute_metrics(self, outputs: list[dict]) -> dict[str, float]:
        from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

        probs = np.concatenate([o["probs"] for o in outputs])
        labels = np.concatenate([o["labels"] for o in outputs])
        preds = probs.argmax(-1)
        metrics = {"accuracy": float(accuracy_score(labels, preds))}
        if len(self.labels) == 2:
            metrics["f1"] = float(f1_score(labels, preds, average="binary", zero_division=0))
            if len(np.unique(labels)) == 2:
                metrics["roc_auc"] = float(roc_auc_score(labels, probs[:, 1]))
        else:
            metrics["f1_macro"] = float(f1_score(labels, preds, average="macro", zero_division=0))
        return metrics


@dataclass(frozen=True)
class Seq2SeqTask(Task):
    max_target_length: int = 128
    kind = "seq2seq"

    def model_class(self):
        from transformers import AutoModelForSeq2SeqLM

        return AutoModelForSeq2SeqLM

    def encode(self, frame: pd.DataFrame, tokenizer, max_len: int, max_target: int) -> list[dict]:
        sources = tokenizer(
            frame[self.text_column].tolist(), truncation=True, max_length=max_len, padding=False
        )
        targets = tokenizer(
            text_target=frame[self.target_column].tolist(),
            truncation=True,
            max_length=max_target,
            padding=False,
        )
        return [
            {"input_ids": ids, "attention_mask": mask, "labels": lab, "reference": ref}
            for ids, mask, lab, ref in zip(
                sources["input_ids"],
                sources["attention_mask"],
                targets["input_ids"],
                frame[self.target_column].tolist(),
                strict=True,
            )
        ]

    def collate(self, tokenizer):
        import torch

        def collate(batch: list[dict]) -> dict[str, Any]:
            padded = tokenizer.pad(
                [
                    {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]}
                    for b in batch
                ],
                return_tensors="pt",
            )
            width = max(len(b["labels"]) for b in batch)
            labels = torch.full((len(batch), width), -100, dtype=torch.long)
            for row, b in enumerate(batch):
                labels[row, : len(b["labels"])] = torch.tensor(b["labels"])
            out = dict(padded)
            out["labels"] = labels
            out["reference"] = [b["reference"] for b in batch]
            return out

        return collate

    def generation_kwargs(self, cfg) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "max_length": cfg.max_length or self.max_target_length,
            "num_beams": cfg.num_beams,
            "length_penalty": cfg.length_penalty,
        }
        if cfg.temperature > 0:
            kwargs.update(do_sample=True, temperature=cfg.temperature, num_beams=1)
        else:
            kwargs["do_sample"] = False
        return kwargs

    def eval_outputs(self, model, batch, cfg, tokenizer) -> tuple[torch.Tensor, dict]:
        references = batch.pop("reference")
        out = model(**batch)
        import torch.distributed as dist

        # synced_gpus keeps every rank calling forward until all have finished: sharded (FSDP)
        # models need every rank in every forward's collectives.
        synced = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        generated = model.generate(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            synced_gpus=synced,
            **self.generation_kwargs(cfg),
        )
        predictions = tokenizer.batch_decode(generated, skip_special_tokens=True)
        return out.loss, {"predictions": predictions, "references": references}

    def compute_metrics(self, outputs: list[dict]) -> dict[str, float]:
        from rouge_score import rouge_scorer

        kinds = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
        scorer = rouge_scorer.RougeScorer(kinds, use_stemmer=True)
        totals = dict.fromkeys(kinds, 0.0)
        count = 0
        for o in outputs:
            for pred, ref in zip(o["predictions"], o["references"], strict=True):
                # rougeLsum splits summaries into sentences on newlines
                scores = scorer.score(ref.replace(". ", ".\n"), pred.replace(". ", ".\n"))
                for kind in kinds:
                    totals[kind] += scores[kind].fmeasure
                count += 1
        return {kind: totals[kind] / max(count, 1) for kind in kinds}
