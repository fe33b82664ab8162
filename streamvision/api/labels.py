"""User labels of patches (the column model selection trains on), from Python and the CLI.

>>> set_labels("runs/cam", [1234, 5678], "person", by="ana")   # doctest: +SKIP

A data directory that a service is serving is labelled through the service (its writer holds
the store); otherwise the store is opened and written here. Either way each label is stored
with who set it and when, and survives restarts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from streamvision.api.client import ServiceError, answer_document
from streamvision.core.errors import InputError


def _service_url(target: str | Path) -> tuple[str, str | None] | None:
    """``(url, collection)`` when ``target`` is a URL or a served data directory, else ``None``."""
    text = str(target)
    if text.startswith(("http://", "https://")):
        return text.rstrip("/"), None
    from cluster.service import names

    record = names.read_record(target)
    return None if record is None else (record["url"].rstrip("/"), Path(target).resolve().name)


def _post(url: str, path: str, body: dict[str, Any], token: str | None) -> dict[str, Any]:
    import httpx

    token = token or os.environ.get("STREAMVISION_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.post(url + path, json=body, headers=headers, timeout=60.0)
    except httpx.HTTPError as exc:
        raise ServiceError(f"cannot reach the service at {url}: {exc}") from exc
    return answer_document(response, url)


def set_labels(target: str | Path, ids: Sequence[int], label: str, *, by: str | None = None,
               token: str | None = None) -> dict[str, Any]:
    """Label patches ``ids`` of a collection as ``label``.

    Args:
        target: the collection's data directory, or ``http://HOST:PORT`` of a service.
        by: who sets it (default: this process's login name).
        token: the service's bearer token (default: ``STREAMVISION_TOKEN``).

    Returns:
        The ``label`` document: ``{"kind": "label", "label", "patch_ids", "labelled"}``.

    Raises:
        InputError: a bad label, or a patch id the collection does not hold.
    """
    service = _service_url(target)
    if service is not None:
        url, collection = service
        body: dict[str, Any] = {"patch_ids": [int(i) for i in ids], "label": label, "by": by}
        if collection is not None:
            body["collection"] = collection
        return _post(url, "/v1/patches/label", body, token)
    from operators.index.sharded import STORE_DIRNAME
    from operators.stores.labels import UserLabels, check_label
    from operators.stores.lineage_store import LineageStore

    name = check_label(label)
    store_dir = Path(target) / STORE_DIRNAME
    if not (store_dir / "CURRENT").exists():
        raise InputError(f"no collection at {target} (run `streamvision ingest` first)")
    with LineageStore(store_dir) as store:
        count = UserLabels(store).set(ids, name, by=by)
    return {"kind": "label", "label": name, "patch_ids": [int(i) for i in ids], "labelled": count}


def get_label(data: str | Path, patch_id: int) -> dict[str, Any]:
    """A patch's current user label and every earlier one (read-only, beside any writer)."""
    from operators.index.sharded import STORE_DIRNAME
    from operators.stores.labels import UserLabels
    from operators.stores.lineage_store import LineageStore

    with LineageStore(Path(data) / STORE_DIRNAME, read_only=True) as store:
        labels = UserLabels(store)
        return {"kind": "label", "patch_id": int(patch_id), "label": labels.get(patch_id),
                "history": labels.history(patch_id)}
