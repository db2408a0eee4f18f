"""News-topic classification: DistilBERT on AG News (World, Sports, Business, Sci/Tech)."""

from __future__ import annotations

import random

import pandas as pd

from training.tasks.base import ClassificationTask, HubData
from training.tasks.synthetic import FILLER, sentence

TOPIC_WORDS = {
    "World": "minister president embassy parliament refugees treaty border ceasefire diplomats "
    "election rebels united-nations capital troops summit sanctions protest coalition "
    "government foreign",
    "Sports": "goal match season coach striker championship league tournament olympic medal "
    "victory defeat playoff quarterback inning referee stadium penalty racing tennis",
    "Business": "shares profit earnings investors quarter revenue merger stocks market bank "
    "dividend economy inflation retailer bonds acquisition ceo sales oil prices",
    "Sci/Tech": "software internet chip computer researchers space nasa wireless browser "
    "processor genome satellite microsoft google linux laptop telescope virus "
    "spacecraft data",
}


class Classify(ClassificationTask):
    def generate(self, rows: int, seed: int) -> pd.DataFrame:
        rng = random.Random(seed)
        vocab = {label: words.split() for label, words in TOPIC_WORDS.items()}
        records = []
        for _ in range(rows):
            label = rng.choice(self.labels)

            # mostly topic words, some filler, now and then a word of another topic
            def pick(label=label):
                roll = rng.random()
                if roll < 0.4:
                    return rng.choice(vocab[label])
                if roll < 0.5:
                    return rng.choice(vocab[rng.choice(self.labels)])
                return rng.choice(FILLER)

            text = " ".join(sentence(rng, pick, 8, 16) for _ in range(2))
            records.append({"text": text, "label": label})
        return pd.DataFrame.from_records(records)

    def tiny_config(self, tokenizer):
        from transformers import DistilBertConfig

        return DistilBertConfig(
            vocab_size=len(tokenizer),
            dim=64,
            n_layers=2,
            n_heads=2,
            hidden_dim=128,
            max_position_embeddings=256,
            pad_token_id=tokenizer.pad_token_id,
        )

    def seed_config(self, tokenizer):
        from transformers import DistilBertConfig

        # DistilBertConfig's defaults are distilbert-base-uncased's architecture
        return DistilBertConfig(vocab_size=30522, pad_token_id=tokenizer.pad_token_id)

    def tokenizer_style(self) -> str:
        return "bert"


TASK = Classify(
    name="classify",
    description="news-topic classification (DistilBERT, AG News)",
    hub_model="distilbert-base-uncased",
    hub_data=HubData(dataset="fancyzhx/ag_news", text_column="text", target_column="label"),
    text_column="text",
    target_column="label",
    text_aliases=("text", "content", "sentence", "description", "document"),
    target_aliases=("label", "labels", "category", "topic", "class", "target"),
    max_seq_length=256,
    primary_metric="accuracy",
    primary_mode="max",
    labels=("World", "Sports", "Business", "Sci/Tech"),
    defaults={
        "smoke": {
            "learning_rate": 1e-3,
            "num_train_epochs": 3,
            "max_seq_length": 48,
            "per_device_train_batch_size": 16,
            "logging_steps": 5,
            "warmup_steps": 10,
        },
        "local": {"learning_rate": 5e-5, "num_train_epochs": 2},
        "full": {"learning_rate": 5e-5, "num_train_epochs": 3},
    },
)
