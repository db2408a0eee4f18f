"""Reaching the Hugging Face hub: fail fast, with the fix, when it cannot be reached."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

from core.errors import UserError

HUB_TIMEOUT_S = 5.0


def hub_reachable() -> bool:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=HUB_TIMEOUT_S):
            return True
    except OSError:
        return False


def require_hub(what: str) -> None:
    """Raise a UserError unless `what` can come from the hub (or its local cache, offline)."""
    if os.environ.get("HF_HUB_OFFLINE", "") in ("1", "true", "True"):
        return  # the user asked for the local cache only; loading will say if it is missing
    if not hub_reachable():
        raise UserError(
            f"cannot reach the Hugging Face hub to load {what}; without internet use "
            "PROFILE=smoke, or MODEL=<local folder> and DATA=<local file>"
        )
