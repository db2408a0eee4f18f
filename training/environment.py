"""The environment a command's Ray workers (and a stack job) start with."""

from __future__ import annotations

import os


def worker_environment() -> dict[str, str]:
    """Quiet Hugging Face and MLflow in workers: no progress bars or links of their own."""
    return {
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "TRANSFORMERS_VERBOSITY": "error",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
        # Ray Train's controller polls its workers every 2 s by default: a run would end (and
        # a failure show) up to that late.
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
        # The user's HF_* settings (HF_HUB_OFFLINE, HF_ENDPOINT, ...), never a token: a job's
        # environment is shown by the Jobs API; the nodes hold HF_TOKEN themselves.
        **{k: v for k, v in os.environ.items() if k.startswith("HF_") and not _secret(k)},
    }


def _secret(name: str) -> bool:
    return any(word in name for word in ("TOKEN", "KEY", "SECRET", "PASSWORD"))
