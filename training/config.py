"""The typed run configuration: defaults, then task and profile defaults, then a CONFIG file,
then environment variables (upper-case keys, e.g. LEARNING_RATE=3e-5, as `make` passes them),
then `key=value` arguments. Unknown keys and bad values are errors, reported before anything
runs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from core.errors import UserError
from core.flags import setting

PROFILES = ("smoke", "local", "full")
STRATEGIES = ("ddp", "fsdp")
OPTIMIZERS = ("adamw", "sgd")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")


@dataclass
class TrainConfig:
    # what to train
    task: str = "classify"
    profile: str = ""  # "" = the target's default (smoke off Chameleon, full on it)
    model: str = ""  # hub id or local folder; "" = the profile's model
    data: str = ""  # hub id or local CSV/JSONL/Parquet file; "" = the profile's data
    text_column: str = ""  # input column in DATA; "" = detected (text, article, ...)
    target_column: str = ""  # label/summary column in DATA; "" = detected
    labels: str = ""  # comma-separated label set; "" = the task's own
    validation_split: float = 0.1  # held-out share when DATA has no validation split
    max_train_samples: int = 0  # 0 = all (profiles set their own)
    max_eval_samples: int = 0
    max_seq_length: int = 0  # 0 = the task's default
    smoke_model: str = "tiny"  # smoke's model: "tiny", or "seed": the seed model's real size
    smoke_seq_len: int = 0  # smoke rows of this many tokens (speed at real lengths); 0 = short
    # run identity
    run_name: str = ""  # "" = <task>-<profile>-<timestamp>; an existing name continues that run
    resume: bool = False  # continue the latest run of this task from its last checkpoint
    # distribution
    workers: int = 1
    strategy: str = "ddp"
    compile: bool = False  # torch.compile the model: faster steps after a slow first one
    # Restarts from the latest checkpoint after a worker (or its host) is lost; 0 = none.
    max_failures: int = 0
    # Hugging Face training arguments
    learning_rate: float = 5e-5
    num_train_epochs: int = 3
    max_steps: int = -1  # > 0 overrides num_train_epochs
    warmup_steps: int = 0
    weight_decay: float = 0.0
    per_device_train_batch_size: int = 16
    per_device_eval_batch_size: int = 32
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    optim: str = "adamw"
    precision: str = "auto"
    seed: int = 42
    logging_steps: int = 10
    save_steps: int = 0  # 0 = checkpoint at each epoch end only
    save_total_limit: int = 2  # checkpoints kept
    # generation (summarize)
    num_beams: int = 4
    max_length: int = 0  # 0 = the task's default summary length
    length_penalty: float = 1.0
    temperature: float = 0.0  # > 0 samples instead of beam search
    registered_model_name: str = ""  # "" = the task name

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


_FIELD_TYPES = {f.name: f.type for f in fields(TrainConfig)}


def parse_value(key: str, raw: Any) -> Any:
    """A setting's value as its type in TrainConfig, or the line that says what is wrong."""
    kind = _FIELD_TYPES[key]
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off", ""):
            return False
        raise UserError(f"{key} must be 1 or 0 (true/false), got {raw!r}")
    if kind == "int":
        try:
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError
            return int(str(raw).strip()) if not isinstance(raw, (int, float)) else int(raw)
        except ValueError:
            raise UserError(f"{key} must be a whole number, got {raw!r}") from None
    if kind == "float":
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise UserError(f"{key} must be a number, got {raw!r}") from None
    return "" if raw is None else str(raw).strip()


def _check_known(keys, where: str) -> None:
    unknown = sorted(set(keys) - set(TrainConfig.field_names()))
    if unknown:
        raise UserError(
            f"unknown setting {', '.join(unknown)} in {where}; `make settings` lists the known ones"
        )


def read_yaml_mapping(path: str, knob: str, what: str) -> dict[str, Any]:
    """A YAML file holding a mapping, or one clear line saying what is wrong with it."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"{knob}={path}: no such file; pass the path of a YAML {what}")
    try:
        loaded = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{knob}={path} is not valid YAML{where}; fix the file") from None
    if not isinstance(loaded, dict):
        raise UserError(f"{knob}={path} must be a mapping of {what}")
    return loaded


def read_config_file(path: str) -> dict[str, Any]:
    loaded = read_yaml_mapping(path, "CONFIG", "file of settings")
    _check_known(loaded, f"CONFIG={path}")
    return loaded


def read_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Settings from environment variables, as make passes them (`make train LEARNING_RATE=3e-5`,
    or max_steps=80 in lower case)."""
    found = {}
    for key in TrainConfig.field_names():
        if value := setting(key.upper(), environ):
            found[key] = value
    return found


def parse_assignments(args: list[str]) -> dict[str, str]:
    """`key=value` or `--key=value` arguments, nanoGPT style."""
    found = {}
    for arg in args:
        key, sep, value = arg.removeprefix("--").partition("=")
        if not sep:
            raise UserError(f"argument {arg!r} is not key=value (e.g. learning_rate=3e-5)")
        found[key.strip().replace("-", "_").lower()] = value
    _check_known(found, "the command line")
    return found


def build_config(layers: list[dict[str, Any]]) -> TrainConfig:
    """Merge layers (lowest precedence first), parse types and validate."""
    merged: dict[str, Any] = {}
    for layer in layers:
        _check_known(layer, "the settings")
        merged.update(layer)
    values = {key: parse_value(key, raw) for key, raw in merged.items()}
    cfg = TrainConfig(**values)
    validate(cfg)
    return cfg


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def validate(cfg: TrainConfig) -> None:
    from training.tasks import TASKS  # late: tasks import heavy libraries

    _require(
        cfg.task in TASKS,
        f"unknown TASK {cfg.task!r}; choose one of: {', '.join(sorted(TASKS))}",
    )
    _require(
        cfg.profile in PROFILES + ("",),
        f"unknown PROFILE {cfg.profile!r}; choose one of: {', '.join(PROFILES)}",
    )
    _require(
        cfg.strategy in STRATEGIES,
        f"unknown STRATEGY {cfg.strategy!r}; choose one of: {', '.join(STRATEGIES)}",
    )
    _require(cfg.smoke_model in ("tiny", "seed"), "smoke_model must be tiny or seed")
    _require(cfg.optim in OPTIMIZERS, f"optim must be one of {', '.join(OPTIMIZERS)}")
    _require(cfg.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}")
    _require(0 < cfg.learning_rate < 1, f"learning_rate must be in (0, 1), got {cfg.learning_rate}")
    _require(cfg.num_train_epochs >= 1, "num_train_epochs must be at least 1")
    _require(cfg.max_steps == -1 or cfg.max_steps > 0, "max_steps must be -1 (off) or above 0")
    _require(cfg.warmup_steps >= 0, "warmup_steps must be 0 or more")
    _require(cfg.weight_decay >= 0, "weight_decay must be 0 or more")
    _require(cfg.max_grad_norm >= 0, "max_grad_norm must be 0 (off) or more")
    for key in (
        "per_device_train_batch_size",
        "per_device_eval_batch_size",
        "gradient_accumulation_steps",
        "workers",
        "logging_steps",
        "save_total_limit",
        "num_beams",
    ):
        _require(getattr(cfg, key) >= 1, f"{key} must be at least 1, got {getattr(cfg, key)}")
    for key in (
        "save_steps",
        "max_train_samples",
        "max_eval_samples",
        "max_seq_length",
        "max_length",
        "seed",
        "smoke_seq_len",
        "max_failures",
    ):
        _require(getattr(cfg, key) >= 0, f"{key} must be 0 or more, got {getattr(cfg, key)}")
    _require(
        cfg.smoke_seq_len == 0 or cfg.profile in ("smoke", ""),
        "smoke_seq_len applies to PROFILE=smoke only; use max_seq_length for real data",
    )
    _require(0 < cfg.validation_split < 1, "validation_split must be between 0 and 1")
    _require(cfg.temperature >= 0, "temperature must be 0 (beam search) or more (sampling)")
    _require(cfg.length_penalty > -10, "length_penalty is out of range")
    _require(
        cfg.run_name == "" or all(c.isalnum() or c in "-_." for c in cfg.run_name),
        f"RUN_NAME {cfg.run_name!r} may hold only letters, digits, '-', '_' and '.'",
    )


def input_length(cfg: TrainConfig, task) -> int:
    """Tokens per input row: smoke_seq_len for long smoke rows, else max_seq_length, else the
    task's default."""
    return cfg.smoke_seq_len or cfg.max_seq_length or task.max_seq_length
