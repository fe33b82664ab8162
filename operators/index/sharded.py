"""A set of index shards behind one API: routing, fan-out, merge, joins. Ray-free.

:class:`ShardSet` holds the whole client-side logic of the vector index service and
leaves one thing abstract: how to call a method on every shard at once. Two subclasses:

* :class:`ShardedIndex` (here): :class:`~operators.index.live_shard.LiveShard` objects in
  this process, one thread each (FAISS releases the GIL, so one query scans every shard
  in parallel, on every core): the embedded ``streamvision.connect(DIR)`` and a store sink
  that runs without a service;
* ``cluster.service.shards.ActorShards``: one Ray actor per shard (the live service).

Inputs are validated here, before any shard is called, so that bad input (wrong dim,
NaN / inf, unnormalized vectors, negative ids) changes no shard. Results follow FAISS:
``search`` gives ``(D, I)`` of shape ``(nq, k)`` with ``-1`` ids where there is no result,
``threshold`` gives ``(lims, D, I)``, joins give ``(ids_a, ids_b, scores)``.

>>> import numpy as np, tempfile
>>> x = np.eye(8, dtype=np.float32)
>>> with ShardedIndex.open(tempfile.mkdtemp(), dim=8, shards=2) as index:
...     _ = index.apply(1, np.arange(1, 9), x)
...     D, I = index.search(x[2], k=1)
...     lims, _, hits = index.threshold(x[2], 0.5, where_ids=np.array([3, 4]))
>>> int(I[0, 0]), hits.tolist()
(3, [3])
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from operators.index import joins
from operators.index.live_shard import LiveShard
from operators.index.routing import merge_range, merge_topk, split
from operators.index.shard import as_ids, as_matrix, check_normalized
from streamvision.core.errors import InputError

#: Where a collection keeps its shard snapshots inside its data directory.
INDEX_DIRNAME = "index"
#: The lineage store (the record), inside a data directory.
STORE_DIRNAME = "lineage"


def layout(data_dir: str | Path) -> tuple[Path, Path]:
    """``(index root, store)`` of a data directory: ``DATA/index`` and ``DATA/lineage``."""
    data_dir = Path(data_dir)
    return data_dir / INDEX_DIRNAME, data_dir / STORE_DIRNAME


class ShardSet(ABC):
    """Client-side logic over ``shards`` shards of dimension ``dim``."""

    def __init__(self, dim: int, shards: int, normalized: bool) -> None:
        if shards <= 0:
            raise InputError(f"shards must be positive, got {shards}")
        self.dim, self.shards, self.normalized = dim, shards, normalized

    @abstractmethod
    def _each(self, method: str, args: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Call ``method(*args[s])`` on every shard ``s`` at once; results in shard order."""

    def _all(self, method: str, *args: Any) -> list[Any]:
        return self._each(method, [args] * self.shards)

    def _vectors(self, x: np.ndarray, what: str) -> np.ndarray:
        x = as_matrix(x, self.dim, what)
        if self.normalized:
            check_normalized(x, what)
        return x

    def _split_where(self, where_ids: np.ndarray | None) -> list[np.ndarray | None]:
        if where_ids is None:
            return [None] * self.shards
        ids = as_ids(where_ids, "where ids")
        return [ids[rows] for rows in split(ids, self.shards)]

    # ------------------------------------------------------------------ writes
    def train(self, sample: np.ndarray) -> None:
        """Train every shard on the same sample (a no-op for indexes that need none)."""
        self._all("train", self._vectors(sample, "training vectors"))

    def check(self, ids: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Validated ``(ids, vectors)`` for :meth:`apply` (raises before anything is written)."""
        x = self._vectors(vectors, "vectors")
        ids = as_ids(ids)
        if len(ids) != len(x):
            raise InputError(f"{len(ids)} ids for {len(x)} vectors")
        return ids, x

    def apply(self, position: int, ids: np.ndarray, vectors: np.ndarray) -> int:
        """Upsert vectors the store wrote at ``position`` into the shards they route to (every
        shard learns the position); returns how many were applied."""
        ids, x = self.check(ids, vectors)
        parts = split(ids, self.shards)
        return sum(self._each("apply", [(position, ids[rows], x[rows]) for rows in parts]))

    def snapshot(self) -> list[dict[str, Any]]:
        """Snapshot every shard with the store position it covers."""
        return self._all("snapshot")

    # ------------------------------------------------------------------ queries
    def search(self, queries: np.ndarray, k: int, where_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by inner product over all shards: ``(D, I)`` each ``(nq, k)``.

        Args:
            queries: ``(nq, dim)`` or ``(dim,)``.
            k: results per query.
            where_ids: only these ids can be results (from :func:`operators.index.filters.where_ids`).
        """
        q = self._vectors(queries, "queries")
        if k <= 0:
            raise InputError(f"k must be at least 1, got {k}")
        parts = self._split_where(where_ids)
        return merge_topk(self._each("search", [(q, k, ids) for ids in parts]), k)

    def threshold(
        self, queries: np.ndarray, t: float, where_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every vector with inner product > ``t`` (strictly): ``(lims, D, I)``, best first per query.

        The MemSQL query ``SELECT id FROM features WHERE DOT_PRODUCT(feature, q) > t``.
        """
        q = self._vectors(queries, "queries")
        if not np.isfinite(t):
            raise InputError(f"threshold must be finite, got {t}")
        parts = self._split_where(where_ids)
        return merge_range(self._each("range_search", [(q, float(t), ids) for ids in parts]), len(q))

    def items(self, where_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, vectors)`` held (all, or those among ``where_ids``), ids sorted."""
        got = self._each("items", [(ids,) for ids in self._split_where(where_ids)])
        ids = np.concatenate([i for i, _ in got])
        x = np.concatenate([v for _, v in got]) if ids.size else np.zeros((0, self.dim), np.float32)
        order = np.argsort(ids)
        return ids[order], x[order]

    def _items_exactly(self, ids: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
        ids = np.unique(as_ids(ids, what))
        held, x = self.items(ids)
        if len(held) != len(ids):
            missing = np.setdiff1d(ids, held)
            raise InputError(f"{len(missing)} {what} are not in the index, e.g. {int(missing[0])}")
        return held, x

    def near_duplicates(self, t: float, where_ids: np.ndarray | None = None) -> joins.JoinResult:
        """Self-join: every pair ``id_a < id_b`` with inner product > ``t``."""
        ids, x = self.items(where_ids)
        return joins.self_join(ids, x, t)

    def join(self, ids_a: np.ndarray, ids_b: np.ndarray, t: float) -> joins.JoinResult:
        """Join two collections (e.g. two cameras): every ``(a, b)`` with ``a.b > t``.

        Raises:
            InputError: an id is not in the index.
        """
        a, xa = self._items_exactly(ids_a, "left ids")
        b, xb = self._items_exactly(ids_b, "right ids")
        return joins.index_join(a, xa, b, xb, t)

    # ------------------------------------------------------------------ facts
    def stats(self) -> dict[str, Any]:
        """``{"ntotal": ..., "shards": [per-shard stats]}``."""
        per = self._all("stats")
        return {"ntotal": sum(s["ntotal"] for s in per), "dim": self.dim, "shards": per}

    @property
    def ntotal(self) -> int:
        """Vectors held over all shards."""
        return int(self.stats()["ntotal"])

    def close(self) -> None:
        """Release what this client holds (the shards' state is the store plus their snapshots)."""


class ShardedIndex(ShardSet):
    """:class:`ShardSet` over durable shards in this process, one thread per shard."""

    def __init__(self, shard_objects: list[LiveShard], normalized: bool) -> None:
        super().__init__(shard_objects[0].index.dim, len(shard_objects), normalized)
        self._shards = shard_objects
        self._pool = ThreadPoolExecutor(max_workers=len(shard_objects), thread_name_prefix="shard")

    @classmethod
    def open(
        cls,
        data_dir: str | Path,
        dim: int,
        factory: str = "Flat",
        shards: int = 2,
        *,
        normalized: bool = True,
        append_only: bool = False,
    ) -> "ShardedIndex":
        """Open the shards of a data directory: each loads its snapshot and replays what the
        store wrote after it (see :func:`layout` and :class:`~operators.index.live_shard.LiveShard`)."""
        root, store = layout(data_dir)
        return cls([LiveShard(root, s, shards, dim, factory, normalized=normalized, append_only=append_only,
                              store=store) for s in range(shards)], normalized)

    def _each(self, method: str, args: Sequence[tuple[Any, ...]]) -> list[Any]:
        futures = [self._pool.submit(getattr(shard, method), *a) for shard, a in zip(self._shards, args)]
        return [f.result() for f in futures]

    def close(self) -> None:
        """Stop the threads (the shards' state is the store plus their snapshots)."""
        self._pool.shutdown()

    def __enter__(self) -> "ShardedIndex":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
