"""User labels through a running service: the writer actor stores them, the front end reads them.

The collection's one RocksDB writer holds the store, so a label set over HTTP (or by
``streamvision label`` while the service runs) is a call on that actor; the front end's
secondary view then catches up and answers ``GET /v1/patches/{ID}/label``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ray

from cluster.service.writer import find_writer
from operators.query.engine import CollectionQueries
from operators.stores.labels import UserLabels, check_label
from streamvision.core.errors import InputError, StreamVisionError


def set_through_writer(data: str | Path, ids: list[Any], label: Any, by: Any) -> dict[str, Any]:
    """Set ``label`` on patches ``ids`` of the served collection in ``data``; the ``label`` document.

    Raises:
        InputError: bad ids or label, or a patch the collection does not hold.
        StreamVisionError: the collection has no running writer.
    """
    if not ids or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
        raise InputError(f"patch_ids must be a non-empty list of patch ids, got {ids!r}")
    name = check_label(label)
    if by is not None and not isinstance(by, str):
        raise InputError(f"by must be a string naming who sets the label, got {by!r}")
    writer = find_writer(data)
    if writer is None:
        raise StreamVisionError(f"no writer runs for {data}")
    try:
        count = ray.get(writer.set_labels.remote([int(i) for i in ids], name, by))
    except ray.exceptions.RayTaskError as exc:
        cause = exc.as_instanceof_cause()
        if isinstance(cause, InputError):
            raise InputError(str(cause).splitlines()[-1]) from exc
        raise
    return {"kind": "label", "label": name, "patch_ids": [int(i) for i in ids], "labelled": count}


def label_document(queries: CollectionQueries, patch_id: int) -> dict[str, Any]:
    """``{"kind": "label", "patch_id", "label": {...} | None, "history": [...]}`` of one patch."""
    queries.store.catch_up()
    labels = UserLabels(queries.store)
    return {"kind": "label", "patch_id": int(patch_id), "label": labels.get(patch_id),
            "history": labels.history(patch_id)}
