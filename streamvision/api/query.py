"""Queries: "what looks like this?" and "where did this come from?", embedded or over HTTP.

>>> import streamvision
>>> sv = streamvision.connect("data")                     # doctest: +SKIP
>>> sv = streamvision.connect("http://127.0.0.1:8000")    # doctest: +SKIP
>>> for match in sv.similar("frame.png", k=5):            # doctest: +SKIP
...     print(match.patch_id, round(match.score, 3), match.lineage["frame_no"])
>>> sv.threshold(vector, 0.9, where={"camera": "cam1"})   # doctest: +SKIP
>>> sv.lineage(patch_id)                                  # doctest: +SKIP

``connect(DIR)`` (:mod:`streamvision.api.connect`) opens a data directory in this process (its shards load their snapshots
and replay what the store wrote since); ``connect("http://HOST:PORT")`` talks to a running
``streamvision serve``. Both offer the same methods and return the same results, built from
the same JSON documents (:mod:`operators.query.engine`).
"""

from __future__ import annotations

import base64
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa

from operators.index.sharded import STORE_DIRNAME, ShardedIndex
from operators.query.engine import CollectionQueries
from operators.query.sql import as_table
from operators.sources.image_folder import decode_image
from operators.sinks.collection_writer import read_manifest
from operators.stores.lineage_store import LineageStore
from operators.stores.pixels import load
from streamvision.core.errors import InputError
from streamvision.core.frames import FrameBatch


@dataclass(frozen=True)
class Match:
    """One query result: a patch id, its score (inner product) and where it came from."""

    patch_id: int
    score: float
    lineage: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (the HTTP API's match)."""
        return asdict(self)


@dataclass(frozen=True)
class Pair:
    """One join result: two patches whose inner product is ``score``."""

    score: float
    a: Match
    b: Match


def _matches(doc: dict[str, Any]) -> list[Match] | list[list[Match]]:
    rows = [[Match(**m) for m in row] for row in doc["results"]]
    return rows if doc["batch"] else rows[0]


def _pairs(doc: dict[str, Any]) -> list[Pair]:
    return [Pair(p["score"], Match(**p["a"]), Match(**p["b"])) for p in doc["results"]]


class Queries(ABC):
    """The query methods every client has; subclasses say how one request is answered."""

    @abstractmethod
    def answer(self, kind: str, **params: Any) -> dict[str, Any]:
        """The JSON document answering query ``kind`` (``similar``, ``threshold``,
        ``near_duplicates``, ``join``, ``lineage``, ``pixels``, ``stats``, ``sql``)."""

    def similar(self, query: Any, k: int = 10, where: Any = None) -> list[Match] | list[list[Match]]:
        """The ``k`` patches most similar to a query: an image (path, RGB array or encoded
        bytes), a vector, an ``(n, d)`` batch (one list per row) or a patch id."""
        return _matches(self.answer("similar", query=query, k=k, where=where))

    def threshold(self, query: Any, t: float, where: Any = None,
                  limit: int | None = None) -> list[Match] | list[list[Match]]:
        """Every patch whose inner product with the query is greater than ``t``, best first."""
        return _matches(self.answer("threshold", query=query, t=t, where=where, limit=limit))

    def near_duplicates(self, t: float = 0.97, where: Any = None, limit: int | None = 100) -> list[Pair]:
        """Pairs of patches with inner product > ``t`` (a similarity self-join), best first."""
        return _pairs(self.answer("near_duplicates", t=t, where=where, limit=limit))

    def join(self, left: Any, right: Any, t: float = 0.9, limit: int | None = 100) -> list[Pair]:
        """Pairs ``(a, b)``, ``a`` matching filter ``left`` and ``b`` filter ``right`` (e.g. two
        cameras), with inner product > ``t``."""
        return _pairs(self.answer("join", left=left, right=right, t=t, limit=limit))

    def lineage(self, patch_id: int) -> list[dict[str, Any]]:
        """The chain from a patch up to its frame (patches first, the frame last)."""
        return self.answer("lineage", patch_id=patch_id)["chain"]

    def pixels(self, patch_id: int) -> np.ndarray:
        """The exact crop of a patch, ``(h, w, 3)`` uint8 RGB, from the format holding its frame."""
        return decode_image(base64.b64decode(self.answer("pixels", patch_id=patch_id)["png"]))

    def stats(self) -> dict[str, Any]:
        """Vectors held, dimension, factory, store position and per-shard facts."""
        return self.answer("stats")

    def tracks(self, where: Any = None, limit: int | None = 100) -> list[dict[str, Any]]:
        """Tracks (a per-camera identity over time) matching ``where``: camera, majority label, time."""
        return self.answer("tracks", where=where, limit=limit)["results"]

    def track(self, camera: str, track_id: int) -> dict[str, Any]:
        """One track and every box of it: ``{"track": ..., "boxes": [...]}``."""
        doc = self.answer("track", camera=camera, track_id=track_id)
        return {"track": doc["track"], "boxes": doc["boxes"]}

    def track_join(self, left_camera: str, right_camera: str, t: float = 0.8, window: float = 2.0,
                   label: str | None = None, limit: int | None = 100) -> list[dict[str, Any]]:
        """Cross-camera identity: pairs ``{"score", "a", "b"}`` of tracks of two cameras that are
        one object (overlapping in time, alike in mean appearance), best first."""
        return self.answer("track_join", left_camera=left_camera, right_camera=right_camera, t=t, window=window,
                           label=label, limit=limit)["results"]

    def sql(self, sql: str, **params: Any) -> pa.Table:
        """Run one ``SELECT`` over the ``patches`` table; ``:name`` parameters come as keywords
        (one used in ``DOT_PRODUCT(vector, :q)`` is a vector, an image or a patch id).

        >>> sv.sql("SELECT patch_id FROM patches WHERE DOT_PRODUCT(vector, :q) > 0.9",
        ...        q="frame.png")                                   # doctest: +SKIP
        >>> sv.sql("SELECT count(DISTINCT frame_no) AS frames FROM patches "
        ...        "WHERE label IN ('car', 'truck', 'bus')")        # doctest: +SKIP
        """
        return as_table(self.answer("sql", sql=sql, params=params))

    def close(self) -> None:
        """Release what the client holds."""

    def __enter__(self) -> "Queries":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Collection(Queries):
    """A data directory opened in this process, read-only (beside a running pipeline or service).

    Args:
        data: the data directory written by ``streamvision ingest``, a pipeline or ``import``.

    Raises:
        InputError: the directory holds no vectors.
    """

    def __init__(self, data: str | Path) -> None:
        self.data = Path(data)
        self.manifest = read_manifest(self.data)
        if not self.manifest.get("dim"):
            raise InputError(f"{self.data} holds no indexed vectors (run `streamvision ingest VIDEO --data {self.data}`)")
        self.dim = int(self.manifest["dim"])
        self.store = LineageStore(self.data / STORE_DIRNAME, read_only=True)
        self.index = ShardedIndex.open(self.data, self.dim, self.manifest.get("factory", "Flat"),
                                       int(self.manifest.get("shards", 2)))
        self.queries = CollectionQueries(self.data.name, self.store, self.index, self.manifest)

    def answer(self, kind: str, **params: Any) -> dict[str, Any]:
        """Answer in this process (see :class:`Queries`)."""
        return self.queries.answer(kind, params)

    def sql(self, sql: str, **params: Any) -> pa.Table:
        """:meth:`Queries.sql`, the Arrow result handed over as DuckDB made it (no JSON rows)."""
        return self.queries.sql_table(sql, params)

    def load(self, camera_or_file: str, *, time_range: tuple[float, float] | None = None,
             every: int = 1) -> Iterator[FrameBatch]:
        """Frames of a camera (its kept Kafka messages) or a video file, only those in
        ``time_range`` decoded (:func:`operators.stores.pixels.load`)."""
        return load(self.store, camera_or_file, time_range=time_range, every=every)

    def close(self) -> None:
        """Close the shards' threads and the store."""
        self.index.close()
        self.store.close()
