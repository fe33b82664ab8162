"""The query contract over one collection, the same embedded, over HTTP and in the CLI.

:class:`CollectionQueries` answers over a lineage store (metadata, lineage, secondary
indexes) and a :class:`~operators.index.sharded.ShardSet` (in-process shards for the
embedded client, Ray actors in the service). Every answer is one JSON-able document:

* ``similar`` / ``threshold``: ``{"kind", "query", "results": [[match, ...] per query row]}``;
* ``near_duplicates`` / ``join``: ``{"kind", "query", "count", "results": [{"score", "a", "b"}]}``;
* ``lineage``: ``{"kind": "lineage", "patch_id", "chain": [patches..., frame]}``, the frame
  saying which format can serve its pixels (``"pixels"``: ``source``, ``frame-file``,
  ``segments`` or ``None``);
* ``pixels``: ``{"kind": "pixels", "patch_id", "format", "frame", "bbox", "shape", "png"}``, the
  patch's exact crop as base64 PNG (:mod:`operators.stores.pixels`);
* ``stats``: ``{"kind": "stats", "collection", "dim", "factory", "ntotal", "position", "shards"}``;
* ``sql``: ``{"kind": "sql", "query", "plan", "columns", "rows", "count"}`` (:mod:`operators.query.sql`);
* ``tracks``, ``track``, ``track_join``: tracks, one track with every box, and the
  cross-camera join of tracks (:mod:`operators.query.track_queries`).

A match is ``{"patch_id", "score", "lineage": {camera, frame_no, ts, wall_time, bbox, label,
model, source}}``, where ``source`` is the file position or Kafka coordinates of its frame.

A query is a feature vector ``(d,)``, a batch ``(n, d)`` (one result list per row), an
image (a path, an RGB ``uint8`` array, or encoded bytes such as a JPEG), or a patch id
(its stored vector). ``where`` filters by label, camera, time range and model
(:class:`~operators.index.filters.Where`, or its dict form). Bad queries raise
:class:`~streamvision.core.errors.InputError` and change nothing.
"""

from __future__ import annotations

import base64
import inspect
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from operators import registry
from operators.base import OperatorContext
from operators.index.filters import Where, where_ids
from operators.index.shard import as_matrix
from operators.index.sharded import ShardSet
from operators.query.json_form import decode_query
from operators.query.sql import execute_sql, run_sql
from operators.query import track_queries
from operators.sources.image_folder import decode_image, read_image
from operators.stores.lineage_store import LineageStore
from operators.stores.pixels import patch_pixels, source_format
from streamvision.core.errors import ConfigError, InputError
from streamvision.core.frames import Frame, FrameBatch
from streamvision.core.lineage import FileKey, FrameKeyCodec

#: The queries :meth:`CollectionQueries.answer` dispatches.
KINDS = ("similar", "threshold", "near_duplicates", "join", "lineage", "pixels", "stats", "sql",
         "tracks", "track", "track_join")
#: Most results any query returns in one answer (``k``, threshold and join results).
MAX_RESULTS = 10_000
_LINEAGE_FIELDS = ("camera", "frame_no", "ts", "wall_time", "bbox", "label", "model")


def _limit(value: int | None, name: str) -> int:
    if value is None:
        return MAX_RESULTS
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= MAX_RESULTS:
        raise InputError(f"{name} must be an integer in [1, {MAX_RESULTS}], got {value!r}")
    return int(value)


def _finite(t: Any, name: str = "t") -> float:
    if isinstance(t, bool) or not isinstance(t, (int, float, np.floating)) or not np.isfinite(t):
        raise InputError(f"{name} must be a finite number, got {t!r}")
    return float(t)


class CollectionQueries:
    """Answers queries over one collection.

    Args:
        name: the collection's name (its data directory's name).
        store: its lineage store (read-only or following the writer).
        index: its shards.
        manifest: its manifest (dimension, factory, featurizer spec).
        refresh: makes the store see the writer's newest writes (a following store catches up);
            called only when an answer needs them: before filters and stats, and when a hit's
            metadata is not there yet (the writer stores it before the shards index the vector),
            so an unfiltered query costs no catch-up and still reads its writes.
    """

    def __init__(self, name: str, store: LineageStore, index: ShardSet, manifest: dict[str, Any],
                 refresh: Callable[[], None] | None = None) -> None:
        self.name = name
        self.store = store
        self.index = index
        self.manifest = manifest
        self.dim = int(manifest["dim"])
        self._refresh = refresh or (lambda: None)
        self._featurizer: list[Any] | None = None

    def answer(self, kind: str, params: dict[str, Any]) -> dict[str, Any]:
        """Answer one request by name (``similar``, ``threshold``, ``near_duplicates``, ``join``,
        ``lineage``, ``stats``) with keyword ``params``: what every client's requests go through.

        Raises:
            InputError: an unknown kind or parameter, or a bad value.
        """
        if kind not in KINDS:
            raise InputError(f"unknown query {kind!r}; one of {', '.join(KINDS)}")
        method = getattr(self, kind)
        try:
            inspect.signature(method).bind(**params)
        except TypeError as exc:
            raise InputError(f"bad parameters for {kind}: {exc}") from exc
        return method(**params)

    # ------------------------------------------------------------------ query vectors
    def featurize(self, image: np.ndarray) -> np.ndarray:
        """The ``(1, dim)`` feature vector of an RGB image, made as at ingest."""
        spec = self.manifest.get("featurizer")
        if not spec:
            raise ConfigError(f"collection {self.name!r} does not record its featurizer; query with a vector")
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InputError(f"a query image must be (h, w, 3) uint8 RGB, got {image.dtype} {image.shape}")
        if self._featurizer is None:
            ops = [registry.build("whole_frame", {}), registry.build(spec["op"], spec.get("options", {}))]
            for op in ops:
                op.setup(OperatorContext())
            self._featurizer = ops
        batch: Any = FrameBatch.from_frames([Frame(FileKey("<query>", 0), 0.0, 0.0, np.ascontiguousarray(image))])
        for op in self._featurizer:
            batch = op.process(batch)
        return batch.vectors

    def vectors(self, query: Any) -> tuple[np.ndarray, bool]:
        """``(queries (n, dim) float32, is_batch)`` for any query form (see the module docstring)."""
        if isinstance(query, (bool, np.bool_)):
            raise InputError("a query is a vector, an image or a patch id, not a boolean")
        if isinstance(query, (int, np.integer)):
            return self.stored_vector(int(query)), False
        if isinstance(query, (bytes, bytearray)):
            return self.featurize(decode_image(bytes(query))), False
        if isinstance(query, (str, Path)):
            return self.featurize(read_image(query)), False
        query = np.asarray(query)
        if query.dtype == np.uint8 and query.ndim == 3:
            return self.featurize(query), False
        if query.dtype.kind not in "fiu" or query.ndim not in (1, 2):
            raise InputError(f"a query vector must be ({self.dim},) or (n, {self.dim}) numbers, "
                             f"got {query.dtype} {query.shape}")
        return as_matrix(query, self.dim, "query vectors"), query.ndim == 2

    def stored_vector(self, patch_id: int) -> np.ndarray:
        """The ``(1, dim)`` stored vector of a patch."""
        try:
            return self.store.vectors([patch_id])
        except KeyError:
            self._refresh()
        try:
            return self.store.vectors([patch_id])
        except KeyError as exc:
            raise InputError(f"no vector stored for patch {patch_id} in collection {self.name!r}") from exc

    def _where(self, where: Any) -> np.ndarray | None:
        spec = Where.of(where)
        if spec.is_empty:
            return None
        self._refresh()
        return where_ids(self.store, spec)

    # ------------------------------------------------------------------ answers
    def describe(self, ids: np.ndarray, scores: np.ndarray) -> list[dict[str, Any]]:
        """Matches (patch id, score, lineage summary) for ``ids``, in order."""
        metas = self.store.patches([int(i) for i in ids])
        if any(meta is None for meta in metas):  # indexed after this reader last caught up
            self._refresh()
            metas = self.store.patches([int(i) for i in ids])
        out = []
        for pid, score, meta in zip(ids.tolist(), scores.tolist(), metas):
            meta = meta or {}
            key = FrameKeyCodec.decode(bytes.fromhex(meta["frame_key"])) if meta.get("frame_key") else None
            lineage = {k: meta.get(k) for k in _LINEAGE_FIELDS}
            lineage["source"] = key.as_dict() if key is not None else meta.get("source")
            out.append({"patch_id": int(pid), "score": round(float(score), 6), "lineage": lineage})
        return out

    def similar(self, query: Any, k: int = 10, where: Any = None) -> dict[str, Any]:
        """The ``k`` most similar patches to each query row (inner product, best first)."""
        k = _limit(k, "k")
        q, batch = self.vectors(query)
        D, I = self.index.search(q, k, where_ids=self._where(where))
        results = [self.describe(I[r][I[r] != -1], D[r][I[r] != -1]) for r in range(len(q))]
        return {"kind": "similar", "collection": self.name, "batch": batch,
                "query": {"k": k, "where": Where.of(where).as_dict()}, "results": results}

    def threshold(self, query: Any, t: float, where: Any = None, limit: int | None = None) -> dict[str, Any]:
        """Every patch with inner product > ``t`` with each query row, best first (the MemSQL
        query); ``counts`` has the exact number per row, ``results`` at most ``limit``."""
        t, limit = _finite(t), _limit(limit, "limit")
        q, batch = self.vectors(query)
        lims, D, I = self.index.threshold(q, t, where_ids=self._where(where))
        rows = [slice(int(lims[r]), int(lims[r + 1])) for r in range(len(q))]
        results = [self.describe(I[s][:limit], D[s][:limit]) for s in rows]
        return {"kind": "threshold", "collection": self.name, "batch": batch,
                "query": {"t": t, "where": Where.of(where).as_dict(), "limit": limit},
                "counts": [s.stop - s.start for s in rows], "results": results}

    def _pairs(self, kind: str, query: dict[str, Any], a: np.ndarray, b: np.ndarray, s: np.ndarray,
               limit: int) -> dict[str, Any]:
        order = np.argsort(-s, kind="stable")[:limit]
        left, right = self.describe(a[order], s[order]), self.describe(b[order], s[order])
        pairs = [{"score": m["score"], "a": m, "b": n} for m, n in zip(left, right)]
        return {"kind": kind, "collection": self.name, "query": query, "count": int(len(a)), "results": pairs}

    def near_duplicates(self, t: float, where: Any = None, limit: int | None = 100) -> dict[str, Any]:
        """Similarity self-join: every pair ``a < b`` with inner product > ``t``, best first."""
        t, limit = _finite(t), _limit(limit, "limit")
        a, b, s = self.index.near_duplicates(t, where_ids=self._where(where))
        return self._pairs("near_duplicates", {"t": t, "where": Where.of(where).as_dict(), "limit": limit},
                           a, b, s, limit)

    def join(self, t: float, left: Any, right: Any, limit: int | None = 100) -> dict[str, Any]:
        """Join two sets of patches (e.g. two cameras, each a ``where``): every ``(a, b)`` with
        inner product > ``t``, best first."""
        t, limit = _finite(t), _limit(limit, "limit")
        if Where.of(left).is_empty or Where.of(right).is_empty:
            raise InputError("a join needs a filter on each side (e.g. {'camera': 'cam1'} and {'camera': 'cam2'})")
        ids_a, ids_b = self._where(left), self._where(right)
        assert ids_a is not None and ids_b is not None
        a, b, s = self.index.join(ids_a, ids_b, t)
        query = {"t": t, "left": Where.of(left).as_dict(), "right": Where.of(right).as_dict(), "limit": limit}
        return self._pairs("join", query, a, b, s, limit)

    def lineage(self, patch_id: int) -> dict[str, Any]:
        """The chain from a patch up to its frame: patches first, the frame (with its file
        position or Kafka offset) last."""
        if isinstance(patch_id, bool) or not isinstance(patch_id, (int, np.integer)):
            raise InputError(f"a patch id is an integer, got {patch_id!r}")
        try:
            chain = self.store.lineage(int(patch_id))
        except KeyError:
            self._refresh()
            chain = None
        try:
            chain = chain or self.store.lineage(int(patch_id))
        except KeyError as exc:
            raise InputError(f"no patch with id {patch_id} in collection {self.name!r}") from exc
        frame = chain[-1]
        if "frame" in frame and chain[0].get("frame_key"):
            frame["pixels"] = source_format(self.store, bytes.fromhex(chain[0]["frame_key"]))
        return {"kind": "lineage", "collection": self.name, "patch_id": int(patch_id), "chain": chain}

    def pixels(self, patch_id: int) -> dict[str, Any]:
        """The exact crop of a patch from whichever format holds its frame, as a PNG."""
        if isinstance(patch_id, bool) or not isinstance(patch_id, (int, np.integer)):
            raise InputError(f"a patch id is an integer, got {patch_id!r}")
        if self.store.patch(int(patch_id)) is None:
            self._refresh()
        found = patch_pixels(self.store, int(patch_id))
        image = found.pop("image")
        ok, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if not ok:
            raise InputError(f"cannot encode the crop of patch {patch_id}")
        return {"kind": "pixels", "collection": self.name, "patch_id": int(patch_id), **found,
                "shape": list(image.shape), "png": base64.b64encode(png.tobytes()).decode("ascii")}

    def tracks(self, where: Any = None, limit: int | None = 100) -> dict[str, Any]:
        """Tracks matching ``where`` (camera, majority label, time overlap), in track id order."""
        limit = _limit(limit, "limit")
        self._refresh()
        count, docs = track_queries.list_tracks(self.store, where, limit)
        return {"kind": "tracks", "collection": self.name, "query": {"where": Where.of(where).as_dict(), "limit": limit},
                "count": count, "results": docs}

    def track(self, camera: str, track_id: int) -> dict[str, Any]:
        """One track and every box of it (its lineage to each detection), in time order."""
        if not isinstance(camera, str) or isinstance(track_id, bool) or not isinstance(track_id, (int, np.integer)):
            raise InputError("a track is named by a camera (text) and a track_id (an integer)")
        self._refresh()
        return {"kind": "track", "collection": self.name, **track_queries.track_boxes(self.store, camera, int(track_id))}

    def track_join(self, left_camera: str, right_camera: str, t: float = 0.8, window: float = 2.0,
                   label: str | None = None, limit: int | None = 100) -> dict[str, Any]:
        """Tracks of two cameras that are one object: in view together (within ``window``
        seconds) and mean appearance vectors with inner product > ``t``; one partner each."""
        t, window, limit = _finite(t), _finite(window, "window"), _limit(limit, "limit")
        self._refresh()
        pairs = track_queries.join_tracks(self.store, left_camera, right_camera, t, window, label)
        query = {"left_camera": left_camera, "right_camera": right_camera, "t": t, "window": window,
                 "label": label, "limit": limit}
        return {"kind": "track_join", "collection": self.name, "query": query, "count": len(pairs),
                "results": [{"score": s, "a": a, "b": b} for s, a, b in pairs[:limit]]}

    def sql(self, sql: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """One ``SELECT`` over the ``patches`` table, vector predicates answered by the index
        (:mod:`operators.query.sql`); a parameter given in the JSON query form (``{"vector": ...}``,
        ``{"image": ...}``, ``{"patch_id": ...}``) is decoded first."""
        return {**run_sql(self, sql, self._sql_params(params)), "collection": self.name}

    def sql_table(self, sql: str, params: dict[str, Any] | None = None) -> Any:
        """:meth:`sql`'s result as a pyarrow Table, without the JSON rows (the embedded client)."""
        return execute_sql(self, sql, self._sql_params(params))[0]

    @staticmethod
    def _sql_params(params: dict[str, Any] | None) -> dict[str, Any]:
        if params is not None and not isinstance(params, dict):
            raise InputError(f"params must be an object of name -> value, got {params!r}")
        return {k: decode_query(v) if isinstance(v, dict) else v for k, v in (params or {}).items()}

    def stats(self) -> dict[str, Any]:
        """Vectors held, dimension, factory, store position and per-shard facts."""
        self._refresh()
        index = self.index.stats()
        return {"kind": "stats", "collection": self.name, "dim": self.dim,
                "factory": self.manifest.get("factory", "Flat"), "featurizer": self.manifest.get("featurizer"),
                "ntotal": index["ntotal"], "position": self.store.position, "shards": index["shards"]}
