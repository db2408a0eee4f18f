"""Data: reading, column mapping, validation, split and manifest."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from core.errors import UserError
from training.config import build_config
from training.data import prepare
from training.tasks import TASKS


def cfg(**settings):
    return build_config([{"profile": "smoke", **settings}])


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_generated_data_is_seeded_and_split_the_same_way_each_time():
    one = prepare(TASKS["classify"], cfg(task="classify"))
    two = prepare(TASKS["classify"], cfg(task="classify"))
    other = prepare(TASKS["classify"], cfg(task="classify", seed=7))
    assert one.manifest == two.manifest
    assert one.manifest["train"]["sha256"] != other.manifest["train"]["sha256"]
    counts = one.manifest["train"]["label_counts"]
    assert set(counts) == {"World", "Sports", "Business", "Sci/Tech"}
    assert one.manifest["validation"]["rows"] == 120  # 10% of 1200


def test_user_file_columns_and_labels_are_mapped(tmp_path):
    rows = [
        {"content": f"text {i}", "category": ["sports", 0, "Business", "3"][i % 4]}
        for i in range(40)
    ]
    path = write_jsonl(tmp_path / "mine.jsonl", rows)
    splits = prepare(TASKS["classify"], cfg(task="classify", data=path))
    assert list(splits.train.columns) == ["text", "label"]
    assert set(splits.train["label"]) | set(splits.validation["label"]) == {
        "Sports",
        "World",
        "Business",
        "Sci/Tech",
    }


def test_csv_and_parquet_read_too(tmp_path):
    frame = pd.DataFrame({"article": ["a b c d"] * 20, "summary": ["a b"] * 20})
    frame.to_csv(tmp_path / "s.csv", index=False)
    frame.to_parquet(tmp_path / "s.parquet")
    for name in ("s.csv", "s.parquet"):
        splits = prepare(TASKS["summarize"], cfg(task="summarize", data=str(tmp_path / name)))
        assert splits.manifest["train"]["rows"] == 18


def test_custom_label_set(tmp_path):
    rows = [{"text": f"t {i}", "label": "pos" if i % 2 else "neg"} for i in range(20)]
    path = write_jsonl(tmp_path / "pn.jsonl", rows)
    splits = prepare(TASKS["fakenews"], cfg(task="fakenews", data=path, labels="neg,pos"))
    assert splits.label_names == ["neg", "pos"]


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        (None, ".jsonl", "no such file"),
        ("text,label\n", ".txt", "unsupported file type .txt"),
        ('{"text": "a", "label": "World"}\n{broken\n', ".jsonl", "could not be read as jsonl"),
        ('{"body": "a", "label": "World"}\n' * 5, ".jsonl", "no input column"),
        (
            '{"text": "a", "label": "World"}\n{"text": "", "label": "World"}\n' * 3,
            ".jsonl",
            "column 'text' has 3 empty values",
        ),
        ('{"text": "a", "label": "Weather"}\n' * 5, ".jsonl", "labels not in the task's label set"),
        ("", ".csv", "holds no rows"),
        ('{"text": "a", "label": "World"}\n', ".jsonl", "too few rows"),
        ('{"text": "a", "label": "World"}\n' * 9, ".jsonl", "single label"),
    ],
)
def test_bad_data_fails_with_the_fix(tmp_path, content, suffix, message):
    path = tmp_path / f"data{suffix}"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserError, match=message):
        prepare(TASKS["classify"], cfg(task="classify", data=str(path)))


def test_named_column_that_does_not_exist(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a", "label": "World"}] * 5)
    with pytest.raises(UserError, match="no column 'headline' \\(text_column\\)"):
        prepare(TASKS["classify"], cfg(task="classify", data=path, text_column="headline"))
