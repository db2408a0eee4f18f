"""Summarization: BART (facebook/bart-large-cnn) on CNN/DailyMail, scored with ROUGE."""

from __future__ import annotations

import random

import pandas as pd

from training.tasks.base import HubData, Seq2SeqTask
from training.tasks.synthetic import FILLER

SUBJECTS = "mayor council company team ministry university court hospital union airline"
VERBS = "approved rejected announced delayed opened closed expanded reviewed funded launched"
OBJECTS = "budget plan stadium bridge school project contract program factory service"
PLACES = "london paris boston denver madrid oslo dublin lisbon vienna austin"
DAYS = "monday tuesday wednesday thursday friday saturday sunday"


class Summarize(Seq2SeqTask):
    def generate(self, rows: int, seed: int) -> pd.DataFrame:
        """Articles whose first sentence states the news; the summary is that sentence."""
        rng = random.Random(seed)
        subjects, verbs, objects, places, days = (
            w.split() for w in (SUBJECTS, VERBS, OBJECTS, PLACES, DAYS)
        )
        records = []
        for _ in range(rows):
            lead = (
                f"the {rng.choice(subjects)} {rng.choice(verbs)} the {rng.choice(objects)} "
                f"in {rng.choice(places)} on {rng.choice(days)}."
            ).capitalize()
            body = [
                " ".join(rng.choice(FILLER) for _ in range(rng.randint(6, 12))).capitalize() + "."
                for _ in range(rng.randint(2, 4))
            ]
            records.append({"article": " ".join([lead, *body]), "summary": lead})
        return pd.DataFrame.from_records(records)

    def smoke_rows(self) -> int:
        return 800

    def tiny_config(self, tokenizer):
        from transformers import BartConfig

        return BartConfig(
            vocab_size=len(tokenizer),
            d_model=64,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=128,
            decoder_ffn_dim=128,
            max_position_embeddings=256,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.eos_token_id,
            forced_eos_token_id=tokenizer.eos_token_id,
        )

    def seed_config(self, tokenizer):
        from transformers import BartConfig

        # BartConfig's defaults are bart-large's architecture (bart-large-cnn's base)
        return BartConfig(
            vocab_size=50264,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.eos_token_id,
            forced_eos_token_id=tokenizer.eos_token_id,
        )

    def tokenizer_style(self) -> str:
        return "bart"


TASK = Summarize(
    name="summarize",
    description="news summarization (BART, CNN/DailyMail)",
    hub_model="facebook/bart-large-cnn",
    hub_data=HubData(
        dataset="abisee/cnn_dailymail",
        config="3.0.0",
        text_column="article",
        target_column="highlights",
        local_train_rows=2000,
        local_eval_rows=200,
    ),
    text_column="article",
    target_column="summary",
    text_aliases=("article", "document", "text", "content", "body"),
    target_aliases=("summary", "highlights", "abstract", "target"),
    max_seq_length=1024,
    max_target_length=142,
    primary_metric="rougeL",
    primary_mode="max",
    defaults={
        "smoke": {
            "learning_rate": 2e-3,
            "num_train_epochs": 4,
            "max_seq_length": 64,
            "max_length": 24,
            "num_beams": 2,
            "per_device_train_batch_size": 16,
            "max_eval_samples": 48,
            "logging_steps": 5,
            "warmup_steps": 10,
        },
        "local": {
            "learning_rate": 3e-5,
            "num_train_epochs": 1,
            "per_device_train_batch_size": 2,
            "per_device_eval_batch_size": 4,
            "max_eval_samples": 100,
        },
        "full": {
            "learning_rate": 3e-5,
            "num_train_epochs": 3,
            "per_device_train_batch_size": 4,
            "per_device_eval_batch_size": 8,
            "max_eval_samples": 1000,
        },
    },
)
