"""Fake-news detection: XLNet on a real/fake news set (fake vs real)."""

from __future__ import annotations

import random

import pandas as pd

from training.tasks.base import ClassificationTask, HubData
from training.tasks.synthetic import FILLER, POLITICS, sentence

# Style cues, as in real fake-news sets where sensational style gives the label away.
CUES = {
    "fake": "shocking breaking unbelievable exposed outrage scandal destroyed secret "
    "hoax insane bombshell viral",
    "real": "reuters spokesman percent according officials statement tuesday wednesday "
    "committee reported analysts quarterly",
}


class FakeNews(ClassificationTask):
    def generate(self, rows: int, seed: int) -> pd.DataFrame:
        rng = random.Random(seed)
        cues = {label: words.split() for label, words in CUES.items()}
        records = []
        for _ in range(rows):
            label = rng.choice(self.labels)
            other = "real" if label == "fake" else "fake"

            def pick(label=label, other=other):
                roll = rng.random()
                if roll < 0.2:
                    return rng.choice(cues[label])
                if roll < 0.25:
                    return rng.choice(cues[other])
                if roll < 0.6:
                    return rng.choice(POLITICS)
                return rng.choice(FILLER)

            text = " ".join(sentence(rng, pick, 8, 14) for _ in range(3))
            if label == "fake" and rng.random() < 0.3:
                text = text.upper()
            records.append({"text": text, "label": label})
        return pd.DataFrame.from_records(records)

    def tiny_config(self, tokenizer):
        from transformers import XLNetConfig

        return XLNetConfig(
            vocab_size=len(tokenizer),
            d_model=64,
            n_layer=2,
            n_head=2,
            d_inner=128,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )

    def seed_config(self, tokenizer):
        from transformers import XLNetConfig

        return XLNetConfig(  # xlnet-base-cased
            vocab_size=32000,
            d_model=768,
            n_layer=12,
            n_head=12,
            d_inner=3072,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )

    def tokenizer_style(self) -> str:
        return "xlnet"


TASK = FakeNews(
    name="fakenews",
    description="fake-news detection (XLNet, real vs fake news)",
    hub_model="xlnet-base-cased",
    hub_data=HubData(dataset="GonzaloA/fake_news", text_column="text", target_column="label"),
    text_column="text",
    target_column="label",
    text_aliases=("text", "content", "article", "body", "document"),
    target_aliases=("label", "labels", "class", "target", "is_fake"),
    max_seq_length=512,
    primary_metric="accuracy",
    primary_mode="max",
    labels=("fake", "real"),
    defaults={
        "smoke": {
            "learning_rate": 1e-3,
            "num_train_epochs": 3,
            "max_seq_length": 64,
            "per_device_train_batch_size": 16,
            "logging_steps": 5,
            "warmup_steps": 10,
        },
        "local": {"learning_rate": 2e-5, "num_train_epochs": 2, "per_device_train_batch_size": 8},
        "full": {"learning_rate": 2e-5, "num_train_epochs": 3, "per_device_train_batch_size": 8},
    },
)
