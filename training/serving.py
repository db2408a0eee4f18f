"""The logged model: an MLflow pyfunc around the fine-tuned Hugging Face folder.

`mlflow.pyfunc.load_model("models:/classify/1").predict(pd.DataFrame({"text": [...]}))` gives
a label and its probability per row (classification) or a summary per row (summarization).
Kept free of the rest of the package so a loaded model needs only torch and transformers."""

from __future__ import annotations

import json

import mlflow.models
import mlflow.pyfunc
import pandas as pd


class TaskPredictor(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        import torch
        from transformers import (
            AutoModelForSeq2SeqLM,
            AutoModelForSequenceClassification,
            AutoTokenizer,
        )

        with open(context.artifacts["task"]) as f:
            self.meta = json.load(f)
        folder = context.artifacts["hf_model"]
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        model_class = (
            AutoModelForSeq2SeqLM
            if self.meta["kind"] == "seq2seq"
            else AutoModelForSequenceClassification
        )
        self.model = model_class.from_pretrained(folder).eval()
        self.torch = torch

    def _texts(self, model_input) -> list[str]:
        if isinstance(model_input, pd.DataFrame):
            column = self.meta["text_column"]
            series = model_input[column] if column in model_input else model_input.iloc[:, 0]
            return series.astype(str).tolist()
        if isinstance(model_input, str):
            return [model_input]
        return [str(x) for x in model_input]

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        texts = self._texts(model_input)
        out = []
        batch = 32
        for start in range(0, len(texts), batch):
            enc = self.tokenizer(
                texts[start : start + batch],
                truncation=True,
                padding=True,
                max_length=self.meta["max_seq_length"],
                return_tensors="pt",
            )
            with self.torch.no_grad():
                if self.meta["kind"] == "seq2seq":
                    ids = self.model.generate(**enc, **self.meta["generation"])
                    out += [
                        {"summary": s}
                        for s in self.tokenizer.batch_decode(ids, skip_special_tokens=True)
                    ]
                else:
                    probs = self.torch.softmax(self.model(**enc).logits, dim=-1)
                    best = probs.argmax(-1)
                    id2label = self.model.config.id2label
                    out += [
                        {"label": id2label[int(i)], "score": float(p[i])}
                        for i, p in zip(best, probs, strict=True)
                    ]
        return pd.DataFrame(out)


# The model is logged as code: MLflow runs this file at load time and takes this object.
mlflow.models.set_model(TaskPredictor())
