"""Load, map, validate and split a task's data; describe it in a manifest.

Sources: the task's generated data (`smoke`), a local CSV/JSONL/Parquet file, or a hub
dataset. Everything is checked before training starts, and errors name the fix."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from core.errors import UserError
from training.config import TrainConfig
from training.hub import require_hub
from training.tasks import Task

READERS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
VALIDATION_NAMES = ("validation", "valid", "val", "dev", "test")


@dataclass
class Splits:
    train: pd.DataFrame
    validation: pd.DataFrame
    label_names: list[str]  # empty for seq2seq
    source: str
    manifest: dict


def label_set(task: Task, cfg: TrainConfig) -> list[str]:
    if task.kind != "classification":
        return []
    if cfg.labels:
        names = [name.strip() for name in cfg.labels.split(",") if name.strip()]
        if len(set(names)) < 2:
            raise UserError("labels needs at least two distinct names, e.g. labels=neg,pos")
        return names
    return list(task.labels)


def looks_like_path(value: str) -> bool:
    return value.startswith((".", "/", "~")) or Path(value).suffix.lower() in READERS


def read_file(path: str) -> pd.DataFrame:
    file = Path(path).expanduser()
    kind = READERS.get(file.suffix.lower())
    if kind is None:
        raise UserError(
            f"DATA={path}: unsupported file type {file.suffix or '(none)'}; "
            "use a .csv, .jsonl or .parquet file"
        )
    if not file.is_file():
        raise UserError(f"DATA={path}: no such file; check the path")
    try:
        if kind == "csv":
            frame = pd.read_csv(file)
        elif kind == "jsonl":
            frame = pd.read_json(file, lines=True)
        else:
            frame = pd.read_parquet(file)
    except pd.errors.EmptyDataError:
        frame = pd.DataFrame()
    except Exception as exc:  # pandas raises many kinds for a malformed file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"DATA={path} could not be read as {kind} ({first}); fix the file"
        ) from None
    if frame.empty:
        raise UserError(f"DATA={path} holds no rows; give it at least a few examples")
    return frame


def _find_column(
    frame: pd.DataFrame, wanted: str, aliases: tuple[str, ...], role: str, knob: str, source: str
) -> str:
    if wanted:
        if wanted not in frame.columns:
            raise UserError(
                f"{source}: no column {wanted!r} ({knob}); columns are: "
                f"{', '.join(map(str, frame.columns))}"
            )
        return wanted
    for name in aliases:
        if name in frame.columns:
            return name
    raise UserError(
        f"{source}: no {role} column (looked for {', '.join(aliases)}); columns are: "
        f"{', '.join(map(str, frame.columns))}; name it with {knob}=<column>"
    )


def map_columns(
    frame: pd.DataFrame,
    task: Task,
    cfg: TrainConfig,
    source: str,
    text_hint: str = "",
    target_hint: str = "",
) -> pd.DataFrame:
    text = _find_column(
        frame, cfg.text_column or text_hint, task.text_aliases, "input", "text_column", source
    )
    target = _find_column(
        frame,
        cfg.target_column or target_hint,
        task.target_aliases,
        "target",
        "target_column",
        source,
    )
    mapped = frame[[text, target]].copy()
    mapped.columns = [task.text_column, task.target_column]
    return mapped


def _check_values(frame: pd.DataFrame, task: Task, labels: list[str], source: str) -> pd.DataFrame:
    if frame.empty:
        raise UserError(f"{source} has no rows; give it at least a few examples")
    for column in (task.text_column, task.target_column):
        values = frame[column]
        empty = values.isna() | (values.astype(str).str.strip() == "")
        if empty.all():
            raise UserError(f"{source}: column {column!r} is empty; fill it or pick another column")
        if empty.any():
            rows = ", ".join(str(i + 1) for i in empty[empty].index[:5])
            raise UserError(
                f"{source}: column {column!r} has {int(empty.sum())} empty values "
                f"(rows {rows}{', ...' if empty.sum() > 5 else ''}); fill or remove them"
            )
    frame = frame.reset_index(drop=True)
    frame[task.text_column] = frame[task.text_column].astype(str)
    if task.kind == "classification":
        frame[task.target_column] = normalise_labels(frame[task.target_column], labels, source)
    else:
        frame[task.target_column] = frame[task.target_column].astype(str)
    return frame


def normalise_labels(values: pd.Series, labels: list[str], source: str) -> pd.Series:
    """Map label values onto the label set: names (any case) or integer ids 0..n-1."""
    by_name = {name.lower(): name for name in labels}

    def one(value):
        if isinstance(value, bool):
            value = int(value)
        if (
            isinstance(value, (int, float))
            and float(value).is_integer()
            and 0 <= int(value) < len(labels)
        ):
            return labels[int(value)]
        key = str(value).strip().lower()
        if key.isdigit() and int(key) < len(labels):
            return labels[int(key)]
        return by_name.get(key)

    mapped = values.map(one)
    unknown = sorted({str(v) for v, m in zip(values, mapped, strict=True) if m is None})
    if unknown:
        shown = ", ".join(unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise UserError(
            f"{source}: labels not in the task's label set ({', '.join(labels)}): {shown}; "
            "fix the data or set labels=<comma-separated names>"
        )
    return mapped


def split(frame: pd.DataFrame, share: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Deterministic shuffle-split: the same data and seed always give the same split."""
    shuffled = frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    n_val = max(1, round(len(shuffled) * share))
    if len(shuffled) - n_val < 1:
        raise UserError(
            f"too few rows ({len(shuffled)}) to split off a validation set; give more data"
        )
    return shuffled.iloc[n_val:].reset_index(drop=True), shuffled.iloc[:n_val].reset_index(
        drop=True
    )


def content_hash(frame: pd.DataFrame) -> str:
    digest = hashlib.sha256()
    for row in frame.itertuples(index=False):
        digest.update(json.dumps(list(row), ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def manifest(train: pd.DataFrame, validation: pd.DataFrame, task: Task, source: str) -> dict:
    def describe(frame: pd.DataFrame) -> dict:
        info = {"rows": len(frame), "sha256": content_hash(frame)}
        if task.kind == "classification":
            info["label_counts"] = {
                str(k): int(v)
                for k, v in frame[task.target_column].value_counts().sort_index().items()
            }
        return info

    return {
        "task": task.name,
        "source": source,
        "columns": [task.text_column, task.target_column],
        "train": describe(train),
        "validation": describe(validation),
    }


def _cap(frame: pd.DataFrame, rows: int) -> pd.DataFrame:
    return frame.iloc[:rows].reset_index(drop=True) if rows and len(frame) > rows else frame


def _load_hub(
    task: Task, cfg: TrainConfig, dataset_id: str
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    require_hub(f"dataset {dataset_id}")
    import datasets

    hub = task.hub_data
    config = hub.config if dataset_id == hub.dataset else None
    try:
        loaded = datasets.load_dataset(dataset_id, config)
    except Exception as exc:  # the hub raises many kinds: missing repo, auth, network
        raise UserError(
            f"could not load dataset {dataset_id} from the hub ({exc}); "
            "check the name or use DATA=<local file>"
        ) from None
    train = loaded["train"].to_pandas()
    val_name = next((n for n in VALIDATION_NAMES if n in loaded), None)
    return train, (loaded[val_name].to_pandas() if val_name else None)


def lengthen(frame: pd.DataFrame, task: Task, words: int) -> pd.DataFrame:
    """Smoke rows of at least `words` words (tokens, for the word-level smoke tokenizer), for
    speed at realistic lengths: each text goes on with the texts of the rows after it that
    share its label (classifiers), or with other articles after its own (summarize, whose
    summary is the article's first sentence), so the signal stays where it was."""
    column = task.text_column
    texts = frame[column].tolist()
    groups = (
        frame.groupby(task.target_column).indices
        if task.kind == "classification"
        else {None: list(range(len(frame)))}
    )
    longer = list(texts)
    for members in groups.values():
        members = list(members)
        for position, row in enumerate(members):
            parts, count, step = [texts[row]], len(texts[row].split()), 1
            while count < words:
                extra = texts[members[(position + step) % len(members)]]
                parts.append(extra)
                count += len(extra.split())
                step += 1
            longer[row] = " ".join(parts)
    return frame.assign(**{column: longer})


def prepare(task: Task, cfg: TrainConfig) -> Splits:
    labels = label_set(task, cfg)
    validation = None
    hint_text = hint_target = ""
    if cfg.data and looks_like_path(cfg.data):
        source = f"DATA={cfg.data}"
        frame = read_file(cfg.data)
    elif cfg.data:
        source = f"hub dataset {cfg.data}"
        frame, validation = _load_hub(task, cfg, cfg.data)
    elif cfg.profile == "smoke":
        source = f"generated {task.name} data (seed {cfg.seed})"
        frame = task.generate(task.smoke_rows(), cfg.seed)
        if cfg.smoke_seq_len:
            frame = lengthen(frame, task, cfg.smoke_seq_len)
            source += f", rows of {cfg.smoke_seq_len} tokens"
    else:
        source = f"hub dataset {task.hub_data.dataset}"
        frame, validation = _load_hub(task, cfg, task.hub_data.dataset)
        hint_text, hint_target = task.hub_data.text_column, task.hub_data.target_column
        if cfg.profile == "local":
            frame = frame.sample(frac=1.0, random_state=cfg.seed).reset_index(drop=True)
            frame = _cap(frame, task.hub_data.local_train_rows)
            if validation is not None:
                validation = _cap(validation, task.hub_data.local_eval_rows)

    frame = _check_values(
        map_columns(frame, task, cfg, source, hint_text, hint_target), task, labels, source
    )
    if validation is None:
        train, validation = split(frame, cfg.validation_split, cfg.seed)
    else:
        validation = _check_values(
            map_columns(validation, task, cfg, f"{source} (validation)", hint_text, hint_target),
            task,
            labels,
            f"{source} (validation)",
        )
        train = frame
    train = _cap(train, cfg.max_train_samples)
    validation = _cap(validation, cfg.max_eval_samples)
    if task.kind == "classification" and train[task.target_column].nunique() < 2:
        raise UserError(
            f"{source}: the training split holds a single label; a classifier "
            "needs examples of at least two labels"
        )
    return Splits(train, validation, labels, source, manifest(train, validation, task, source))
