"""``where=`` filters: patch ids from the RocksDB secondary indexes, for FAISS ``IDSelector``.

The lineage store keeps ``by_label`` (``label 0 camera 0 ts_us id``) and ``by_time``
(``camera 0 ts_us id``) as sorted keys (DeepLens' B+tree role). A filter is turned into
the set of matching ids with prefix / range scans, and the vector search is then restricted
to those ids (:meth:`operators.index.shard.IndexShard.search` ``ids=``).

>>> Where(label="car", camera="cam3", start=36000.0, end=36300.0).describe()
"label='car' camera='cam3' time in [36000.0, 36300.0)"
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from operators.stores.lineage_store import LineageStore
from streamvision.errors import InputError

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

    def __post_init__(self) -> None:
        for name in ("label", "camera"):
            value = getattr(self, name)
            if value is not None and (value == "" or "\x00" in value):
                raise InputError(f"where {name} must be a non-empty string without NUL, got {value!r}")
        if self.start is not None and self.end is not None and self.end < self.start:
            raise InputError(f"where time range is empty: end {self.end} < start {self.start}")

    @property
    def is_empty(self) -> bool:
        """True when the filter matches every patch."""
        return self.label is None and self.camera is None and self.start is None and self.end is None

    def describe(self) -> str:
        """A short human-readable form."""
        parts = []
        if self.label is not None:
            parts.append(f"label={self.label!r}")
        if self.camera is not None:
            parts.append(f"camera={self.camera!r}")
        if self.start is not None or self.end is not None:
            parts.append(f"time in [{self.start}, {self.end})")
        return " ".join(parts) or "everything"


def _ts_us(key: bytes) -> float:
    return struct.unpack(">Q", key[-16:-8])[0] / 1e6


def where_ids(store: LineageStore, where: Where) -> np.ndarray | None:
    """Sorted ids of the patches matching ``where``, or ``None`` when it matches everything.

    Label filters scan ``by_label`` (prefix ``label 0 [camera 0]``); camera / time filters
    scan ``by_time`` (prefix ``camera 0``, or every camera). Time bounds are applied to the
    timestamp carried in each key.
    """
    if where.is_empty:
        return None
    if where.label is not None:
        prefix = where.label.encode() + _SEP + (where.camera.encode() + _SEP if where.camera else b"")
        family = "by_label"
    else:
        prefix = where.camera.encode() + _SEP if where.camera else b""
        family = "by_time"
    lo = -np.inf if where.start is None else where.start
    hi = np.inf if where.end is None else where.end
    ids = [
        struct.unpack(">Q", key[-8:])[0]
        for key, _ in store.scan(family, prefix)
        if lo <= _ts_us(key) < hi
    ]
    return np.unique(np.array(ids, np.int64))
