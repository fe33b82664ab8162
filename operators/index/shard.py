"""One FAISS index keyed by patch id: the unit the vector index service shards over.

Follows FAISS's array contract everywhere: inputs are ``(n, d)`` contiguous float32,
searches return ``(D, I)`` with ``-1`` ids where there is no result. Indexes are declared
by ``index_factory`` strings and use inner product (vectors are L2-normalized, so inner
product is cosine similarity, the MemSQL ``DOT_PRODUCT``).

>>> import numpy as np
>>> shard = IndexShard(dim=4, factory="Flat")
>>> x = np.eye(4, dtype=np.float32)
>>> shard.upsert(np.array([10, 11, 12, 13]), x)
>>> D, I = shard.search(x[:1], k=2)
>>> int(I[0, 0]), float(D[0, 0])
(10, 1.0)
"""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from streamvision.errors import InputError


def as_matrix(x: np.ndarray, dim: int, what: str = "vectors") -> np.ndarray:
    """Check and convert ``x`` to a contiguous ``(n, dim)`` float32 matrix of finite values.

    Raises:
        InputError: wrong shape or dimension, NaN or inf values.
    """
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != dim:
        raise InputError(f"{what} must be (n, {dim}), got shape {x.shape}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise InputError(f"{what} contain NaN or inf values")
    return x


class IndexShard:
    """A FAISS index with add / upsert / remove by 63-bit patch id.

    Args:
        dim: vector dimension.
        factory: an ``index_factory`` string (``"Flat"``, ``"SQ8"``, ``"HNSW32"``, ...).
    """

    def __init__(self, dim: int, factory: str = "Flat") -> None:
        if dim <= 0:
            raise InputError(f"vector dimension must be positive, got {dim}")
        try:
            inner = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise InputError(f"unknown or invalid index_factory string {factory!r}: {exc}") from exc
        self.dim = dim
        self.factory = factory
        self.index = faiss.IndexIDMap2(inner)

    @property
    def ntotal(self) -> int:
        """Number of vectors held."""
        return int(self.index.ntotal)

    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Insert vectors under ``ids``, replacing any already held (same id twice = one entry)."""
        x = as_matrix(vectors, self.dim)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if len(ids) != len(x):
            raise InputError(f"{len(ids)} ids for {len(x)} vectors")
        ids, last = np.unique(ids[::-1], return_index=True)  # keep the last vector given per id
        x = x[::-1][last]
        if self.index.ntotal:
            self.index.remove_ids(ids)
        self.index.add_with_ids(x, ids)

    def remove(self, ids: np.ndarray) -> int:
        """Remove ``ids``; returns how many were present."""
        return int(self.index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64)))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by inner product: ``(D, I)``, each ``(nq, k)``; ``I == -1`` where none."""
        q = as_matrix(queries, self.dim, "queries")
        return self.index.search(q, k)

    def range_search(self, queries: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All vectors with inner product > ``threshold``: FAISS's ``(lims, D, I)``."""
        q = as_matrix(queries, self.dim, "queries")
        lims, D, I = self.index.range_search(q, float(threshold))
        keep = D > threshold  # FAISS keeps >= for inner product; the query says strictly greater
        if keep.all():
            return lims, D, I
        kept_before = np.concatenate([[0], np.cumsum(keep)])
        return kept_before[lims].astype(lims.dtype), D[keep], I[keep]

    def save(self, path: str | Path) -> None:
        """Write the index atomically (a temporary file renamed into place)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        faiss.write_index(self.index, str(tmp))
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> "IndexShard":
        """Read an index written by :meth:`save`."""
        index = faiss.read_index(str(path))
        shard = cls.__new__(cls)
        shard.dim = index.d
        shard.factory = "loaded"
        shard.index = index
        return shard
