"""``where=`` filters: patch ids from the RocksDB secondary indexes, for FAISS ``IDSelector``.

The lineage store keeps ``by_label`` (``label 0 camera 0 ts_us id``), ``by_model``
(``model 0 camera 0 ts_us id``) and ``by_time`` (``camera 0 ts_us id``) as sorted keys
(DeepLens' B+tree role). A filter becomes the set of matching ids by RocksDB range seeks,
``[camera 0 start, camera 0 end)`` per camera (a skip-scan when no camera is given), so it
costs the keys it matches plus one seek per camera, never a scan of every patch. The vector
search is then restricted to those ids (:meth:`operators.index.shard.IndexShard.search` ``ids=``).

>>> Where(label="car", camera="cam3", start=36000.0, end=36300.0).describe()
"label='car' camera='cam3' time in [36000.0, 36300.0)"
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from operators.stores.lineage_store import LineageStore
from streamvision.core.errors import InputError

_SEP = b"\x00"


@dataclass(frozen=True)
class Where:
    """A metadata filter; every field left ``None`` matches everything.

    Attributes:
        label: patch label (e.g. ``"car"``).
        camera: camera / source id.
        start: earliest timestamp, seconds (inclusive).
        end: latest timestamp, seconds (exclusive).
    """

    label: str | None = None
    camera: str | None = None
    start: float | None = None
    end: float | None = None
    model: str | None = None

    @classmethod
    def of(cls, spec: "Where | dict[str, Any] | None") -> "Where":
        """A filter from a ``Where``, a dict of its fields (the JSON form) or ``None``.

        Raises:
            InputError: an unknown field, or a field of the wrong type.
        """
        if isinstance(spec, Where):
            return spec
        if spec is None:
            return cls()
        if not isinstance(spec, dict):
            raise InputError(f"where must be an object with label, camera, start, end, model; got {spec!r}")
        unknown = sorted(set(spec) - {"label", "camera", "start", "end", "model"})
        if unknown:
            raise InputError(f"unknown where field(s) {unknown}; use label, camera, start, end, model")
        for name in ("label", "camera", "model"):
            if spec.get(name) is not None and not isinstance(spec[name], str):
                raise InputError(f"where {name} must be a string, got {spec[name]!r}")
        for name in ("start", "end"):
            value = spec.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value)):
                raise InputError(f"where {name} must be a finite number of seconds, got {value!r}")
        return cls(**{k: v for k, v in spec.items() if v is not None})

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (fields left ``None`` included)."""
        return {"label": self.label, "camera": self.camera, "start": self.start, "end": self.end, "model": self.model}

    def __post_init__(self) -> None:
        for name in ("label", "camera", "model"):
            value = getattr(self, name)
            if value is not None and (value == "" or "\x00" in value):
                raise InputError(f"where {name} must be a non-empty string without NUL, got {value!r}")
        if self.start is not None and self.end is not None and self.end < self.start:
            raise InputError(f"where time range is empty: end {self.end} < start {self.start}")

    @property
    def is_empty(self) -> bool:
        """True when the filter matches every patch."""
        return all(v is None for v in (self.label, self.camera, self.start, self.end, self.model))

    def describe(self) -> str:
        """A short human-readable form."""
        parts = []
        if self.label is not None:
            parts.append(f"label={self.label!r}")
        if self.camera is not None:
            parts.append(f"camera={self.camera!r}")
        if self.model is not None:
            parts.append(f"model={self.model!r}")
        if self.start is not None or self.end is not None:
            parts.append(f"time in [{self.start}, {self.end})")
        return " ".join(parts) or "everything"


def _ts_key(seconds: float | None, default: bytes) -> bytes:
    if seconds is None:
        return default
    return struct.pack(">Q", max(0, int(round(seconds * 1e6))))


def _camera_ranges(store: LineageStore, family: str, head: bytes, where: Where) -> Iterator[bytes]:
    """Keys ``head camera 0 ts id`` with ``start <= ts < end``: one range seek per camera."""
    lo_ts, hi_ts = _ts_key(where.start, b""), _ts_key(where.end, b"\xff" * 9)
    if where.camera is not None:
        base = head + where.camera.encode() + _SEP
        yield from store.keys_between(family, base + lo_ts, base + hi_ts)
        return
    at = head
    while (key := store.first_key(family, at)) is not None and key.startswith(head):
        camera = key[len(head):key.index(_SEP, len(head))]
        base = head + camera + _SEP
        yield from store.keys_between(family, base + lo_ts, base + hi_ts)
        at = head + camera + b"\x01"  # the next camera: SEP (0) < 1


def where_ids(store: LineageStore, where: Where) -> np.ndarray | None:
    """Sorted ids of the patches matching ``where``, or ``None`` when it matches everything.

    Label and model filters seek ``by_label`` / ``by_model``; camera and time alone seek
    ``by_time``; given both a label and a model, the two id sets are intersected.
    """
    if where.is_empty:
        return None
    heads = [(f"by_{name}", getattr(where, name).encode() + _SEP) for name in ("label", "model")
             if getattr(where, name) is not None] or [("by_time", b"")]
    result: np.ndarray | None = None
    for family, head in heads:
        ids = np.unique(np.array([struct.unpack(">Q", key[-8:])[0]
                                  for key in _camera_ranges(store, family, head, where)], np.int64))
        result = ids if result is None else np.intersect1d(result, ids)
    assert result is not None
    return result
