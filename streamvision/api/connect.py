"""``streamvision.connect``: one entry point for embedded and service clients."""

from __future__ import annotations

from pathlib import Path

from streamvision.api.client import ServiceClient
from streamvision.api.query import Collection, Queries


def connect(target: str | Path, *, token: str | None = None) -> Queries:
    """Open a data directory in this process, or connect to a service by its URL.

    Args:
        target: a data directory, or ``http://HOST:PORT`` of ``streamvision serve``.
        token: the bearer token of a service bound beyond 127.0.0.1 (default: the
            ``STREAMVISION_TOKEN`` environment variable).

    A data directory is opened read-only (nothing is written into it; one this process cannot
    write is read too) beside any writer: a running pipeline or service does not block it.

    Raises:
        InputError: the directory holds no vectors.
        ConfigError: its ``manifest.json`` is unreadable or invalid.
    """
    text = str(target)
    if text.startswith(("http://", "https://")):
        return ServiceClient(text, token=token)
    return Collection(target)
