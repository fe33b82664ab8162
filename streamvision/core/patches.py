"""Patches: DeepLens' narrow waist, ``Patch(ImgRef, Data, MetaData)``.

A patch is a region of a frame (the whole frame, a detector crop, a tile) or a
feature vector made from one. :class:`PatchBatch` is the columnar form that travels
between actors; :class:`Patch` is the row form users see.

Lineage: every patch knows its parent patch id (``0`` when its parent is the frame
itself) and the encoded key of the frame it came from, so a chain of operators can
always be walked back to the original pixels and Kafka offset or file position.

>>> import numpy as np
>>> from streamvision.core.lineage import FileKey
>>> batch = PatchBatch.whole_frames(
...     keys=[FileKey("v.avi", 0).encode()], cameras=["v.avi"], frame_no=np.array([0]),
...     pts=np.array([0.0]), wall_time=np.array([0.0]), size=(576, 768),
...     operator="whole_frame")
>>> batch.bboxes[0].tolist()
[0.0, 0.0, 768.0, 576.0]
>>> vecs = batch.derive(np.ones((1, 4), np.float32), operator="hist")
>>> bool(vecs.parent_ids[0] == batch.ids[0])
True
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Sequence

import numpy as np

from streamvision.core.lineage import id_bytes, patch_id


def merge_meta(metas: Sequence[dict[str, object]]) -> dict[str, object]:
    """Join per-batch ``meta`` dicts: list values are concatenated, others keep the last value.

    By convention batch meta values are lists (e.g. ``offset_ranges``), so merging batches
    for dynamic batching keeps every entry.
    """
    merged: dict[str, object] = {}
    for meta in metas:
        for key, value in meta.items():
            if isinstance(value, list):
                merged[key] = [*merged.get(key, []), *value]  # type: ignore[misc]
            else:
                merged[key] = value
    return merged


@dataclass(frozen=True)
class Patch:
    """One patch.

    Attributes:
        id: deterministic 63-bit id.
        ref: lineage: ``(parent_id, frame_key)``; ``parent_id`` is 0 when the parent is the frame.
        data: pixels ``(h, w, 3)`` uint8, or a float32 feature vector, or ``None``.
        meta: label, score, bbox, camera, frame_no, ts, model, ...
    """

    id: int
    ref: tuple[int, bytes]
    data: np.ndarray | None
    meta: dict[str, Any]


@dataclass
class PatchBatch:
    """Columnar batch of patches.

    Attributes:
        ids: ``(n,)`` int64 patch ids.
        parent_ids: ``(n,)`` int64 parent patch ids, 0 where the parent is the frame.
        frame_keys: encoded frame key of each patch.
        cameras: camera id per patch.
        frame_no: ``(n,)`` int64 frame numbers.
        pts: ``(n,)`` float64 presentation times (seconds).
        wall_time: ``(n,)`` float64 capture times (seconds since the epoch).
        bboxes: ``(n, 4)`` float32 ``x0, y0, x1, y1`` in frame pixels.
        labels: label per patch (``""`` for none).
        scores: ``(n,)`` float32 detector scores (1.0 for whole frames).
        models: name (and version) of the operator that made each patch.
        crops: pixels per patch (``(h, w, 3)`` uint8), or ``None`` once featurized.
        vectors: ``(n, d)`` float32 features, or ``None`` before featurizing.
        extra: more per-patch columns (lists of JSON-able values), e.g. ImageNet top-k.
        meta: per-batch facts carried along, list-valued by convention (for example
            ``offset_ranges``: the Kafka offsets the batch completes). Operators keep it, and
            must return a (possibly empty) batch for every input batch so it reaches the sink.
    """

    ids: np.ndarray
    parent_ids: np.ndarray
    frame_keys: list[bytes]
    cameras: list[str]
    frame_no: np.ndarray
    pts: np.ndarray
    wall_time: np.ndarray
    bboxes: np.ndarray
    labels: list[str]
    scores: np.ndarray
    models: list[str]
    crops: list[np.ndarray] | None = None
    vectors: np.ndarray | None = None
    extra: dict[str, list[Any]] = field(default_factory=dict)
    meta: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.ids)
        for name in ("parent_ids", "frame_keys", "cameras", "frame_no", "pts", "wall_time",
                     "bboxes", "labels", "scores", "models"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"column {name!r} has {len(getattr(self, name))} rows, expected {n}")
        if self.crops is not None and len(self.crops) != n:
            raise ValueError(f"crops has {len(self.crops)} rows, expected {n}")
        if self.vectors is not None and (self.vectors.ndim != 2 or len(self.vectors) != n):
            raise ValueError(f"vectors must be ({n}, d), got {self.vectors.shape}")
        for name, column in self.extra.items():
            if len(column) != n:
                raise ValueError(f"extra column {name!r} has {len(column)} rows, expected {n}")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int | None:
        """Vector dimension, or ``None`` for pixel patches."""
        return None if self.vectors is None else int(self.vectors.shape[1])

    @classmethod
    def empty(cls, meta: dict[str, object] | None = None, dim: int | None = None) -> "PatchBatch":
        """A batch with no rows that still carries ``meta`` (offsets) to the sink."""
        return cls(
            ids=np.zeros(0, np.int64), parent_ids=np.zeros(0, np.int64), frame_keys=[], cameras=[],
            frame_no=np.zeros(0, np.int64), pts=np.zeros(0), wall_time=np.zeros(0),
            bboxes=np.zeros((0, 4), np.float32), labels=[], scores=np.zeros(0, np.float32), models=[],
            vectors=None if dim is None else np.zeros((0, dim), np.float32), meta=dict(meta or {}),
        )

    @classmethod
    def whole_frames(
        cls,
        *,
        keys: list[bytes],
        cameras: list[str],
        frame_no: np.ndarray,
        pts: np.ndarray,
        wall_time: np.ndarray,
        size: tuple[int, int],
        operator: str,
        crops: list[np.ndarray] | None = None,
        meta: dict[str, object] | None = None,
    ) -> "PatchBatch":
        """One patch per frame covering the whole frame of ``size = (h, w)``."""
        n = len(keys)
        h, w = size
        return cls(
            ids=np.fromiter((patch_id(k, operator, 0) for k in keys), np.int64, n),
            parent_ids=np.zeros(n, np.int64),
            frame_keys=list(keys),
            cameras=list(cameras),
            frame_no=np.asarray(frame_no, np.int64),
            pts=np.asarray(pts, np.float64),
            wall_time=np.asarray(wall_time, np.float64),
            bboxes=np.tile(np.array([0, 0, w, h], np.float32), (n, 1)),
            labels=[""] * n,
            scores=np.ones(n, np.float32),
            models=[operator] * n,
            crops=crops,
            meta=dict(meta or {}),
        )

    def derive(self, vectors: np.ndarray, *, operator: str, extra: dict[str, list[Any]] | None = None) -> "PatchBatch":
        """Feature patches made from these patches: new ids, parent = these ids, crops dropped.

        The parents' own model and parent go along in ``extra`` (``parent_model``,
        ``parent_parent``) so that the store keeps every link of the lineage chain.
        """
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        ids = np.fromiter((patch_id(id_bytes(int(p)), operator, 0) for p in self.ids), np.int64, len(self))
        links = {"parent_model": list(self.models), "parent_parent": [int(p) for p in self.parent_ids]}
        return replace(
            self,
            ids=ids,
            parent_ids=self.ids.copy(),
            models=[operator] * len(self),
            crops=None,
            vectors=vectors,
            extra={**self.extra, **links, **(extra or {})},
        )

    def take(self, index: np.ndarray | Sequence[int]) -> "PatchBatch":
        """The rows at ``index`` (an integer array or boolean mask)."""
        idx = np.flatnonzero(index) if np.asarray(index).dtype == bool else np.asarray(index, np.int64)
        pick = idx.tolist()
        return replace(
            self,
            ids=self.ids[idx],
            parent_ids=self.parent_ids[idx],
            frame_keys=[self.frame_keys[i] for i in pick],
            cameras=[self.cameras[i] for i in pick],
            frame_no=self.frame_no[idx],
            pts=self.pts[idx],
            wall_time=self.wall_time[idx],
            bboxes=self.bboxes[idx],
            labels=[self.labels[i] for i in pick],
            scores=self.scores[idx],
            models=[self.models[i] for i in pick],
            crops=None if self.crops is None else [self.crops[i] for i in pick],
            vectors=None if self.vectors is None else self.vectors[idx],
            extra={k: [v[i] for i in pick] for k, v in self.extra.items()},
        )

    @classmethod
    def concat(cls, batches: Sequence["PatchBatch"]) -> "PatchBatch":
        """Rows of several batches in order; ``meta`` values (lists by convention) are concatenated."""
        if not batches:
            raise ValueError("concat needs at least one batch")
        if len(batches) == 1:
            return batches[0]
        has_crops = all(b.crops is not None for b in batches)
        has_vectors = all(b.vectors is not None for b in batches)
        keys = set(batches[0].extra)
        return cls(
            ids=np.concatenate([b.ids for b in batches]),
            parent_ids=np.concatenate([b.parent_ids for b in batches]),
            frame_keys=[k for b in batches for k in b.frame_keys],
            cameras=[c for b in batches for c in b.cameras],
            frame_no=np.concatenate([b.frame_no for b in batches]),
            pts=np.concatenate([b.pts for b in batches]),
            wall_time=np.concatenate([b.wall_time for b in batches]),
            bboxes=np.concatenate([b.bboxes for b in batches]),
            labels=[x for b in batches for x in b.labels],
            scores=np.concatenate([b.scores for b in batches]),
            models=[m for b in batches for m in b.models],
            crops=[c for b in batches for c in b.crops] if has_crops else None,  # type: ignore[union-attr]
            vectors=np.concatenate([b.vectors for b in batches]) if has_vectors else None,  # type: ignore[misc]
            extra={k: [v for b in batches for v in b.extra.get(k, [None] * len(b))] for k in keys},
            meta=merge_meta([b.meta for b in batches]),
        )

    def meta_row(self, i: int) -> dict[str, Any]:
        """The metadata of row ``i`` as a JSON-able dict (what the lineage store keeps)."""
        row: dict[str, Any] = {
            "camera": self.cameras[i],
            "frame_no": int(self.frame_no[i]),
            "ts": float(self.pts[i]),
            "wall_time": float(self.wall_time[i]),
            "bbox": [float(v) for v in self.bboxes[i]],
            "label": self.labels[i],
            "score": float(self.scores[i]),
            "model": self.models[i],
        }
        for name, column in self.extra.items():
            row[name] = column[i]
        return row

    def rows(self) -> Iterator[Patch]:
        """The batch as :class:`Patch` objects (for tests and plain loops, not hot paths)."""
        for i in range(len(self)):
            data = self.vectors[i] if self.vectors is not None else (self.crops[i] if self.crops else None)
            yield Patch(int(self.ids[i]), (int(self.parent_ids[i]), self.frame_keys[i]), data, self.meta_row(i))
