"""Bulk import of existing embeddings into a collection: through its service if one serves it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import ray

from cluster.local import ensure_ray
from cluster.service import names
from cluster.service.writer import find_writer
from operators.sinks.collection_writer import CollectionWriter
from operators.sinks.store_sink import local_shards
from operators.sources.embeddings_file import read_embeddings
from streamvision.core.errors import ConfigError


def import_embeddings(
    file: str | Path,
    data: str | Path,
    *,
    normalize: bool = False,
    first_id: int = 1,
    index_factory: str = "Flat",
    shards: int = 2,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Store and index the embeddings of a ``.npy`` or ``.parquet`` file; returns how many.

    Args:
        file: see :func:`operators.sources.embeddings_file.read_embeddings`.
        data: the collection's data directory; when a service serves it, the rows go through
            the service's writer (and are answerable as each chunk returns).
        normalize: L2-normalize each row first (the index needs unit-norm vectors).
        first_id: id of the first row of a ``.npy`` file.
        index_factory: FAISS index of a new collection.
        shards: shard count of a new collection.
        progress: called with the running total after each chunk.

    Raises:
        InputError: a bad file, or vectors the collection refuses (other dimension, not unit norm).
        ConfigError: the service's writer is not running.
    """
    record = names.read_record(data)
    writer = None
    if record is not None:
        ensure_ray(record["ray_address"])
        writer = find_writer(data)
        if writer is None:
            raise ConfigError(f"{data} is served by {record['url']}, but its writer is not running")
    local = None if writer is not None else CollectionWriter(data, local_shards, index_factory=index_factory,
                                                             shards=shards)
    total = 0
    in_flight: tuple[Any, int] | None = None  # one chunk travels to the writer while the next is read

    def done(n: int) -> None:
        nonlocal total
        total += n
        if progress is not None:
            progress(total)

    try:
        for ids, x, metas in read_embeddings(file, first_id=first_id):
            if normalize:
                x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
            if writer is None:
                assert local is not None
                local.import_vectors(ids, x, metas)
                done(len(ids))
                continue
            ref = writer.import_vectors.remote(ids, x, metas)
            if in_flight is not None:
                ray.get(in_flight[0])
                done(in_flight[1])
            in_flight = (ref, len(ids))
        if in_flight is not None:
            ray.get(in_flight[0])
            done(in_flight[1])
    finally:
        if local is not None:
            local.close()
    return total
