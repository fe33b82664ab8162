"""A shard derived from the store: a snapshot at a store position, plus replay of what is newer.

The lineage store is the record (ARCHITECTURE section 7); a shard is derived state, like a
Milvus query node replaying its log. Shard ``s`` of ``n`` keeps in ``ROOT/shard-s-of-n/``:

=================  ===========================================================
``index.faiss``    the last snapshot (``faiss.write_index``; our own file)
``snapshot.json``  factory, dim, ``ntotal`` and the store *position* it covers
=================  ===========================================================

Opening maps the snapshot (:meth:`IndexShard.load` with ``mapped=True``: no pass over its
vectors until the first write) and replays the vectors the store wrote after its position
(:meth:`operators.stores.lineage_store.LineageStore.vectors_since`) that route to this
shard, so the cost of opening is what was written since, never a scan of every vector.
A snapshot rewrites the index file only when the shard changed since the last one. Live
writes arrive through :meth:`LiveShard.apply` right after the store wrote them, with their
position. Replays are idempotent (patch ids are deterministic), so a write applied twice
changes nothing. A missing or unreadable snapshot is rebuilt from
the store, with a warning.

An index that must be trained (``IVF...``, ``SQ8``, ``PQ...``) is trained once the shard
holds :func:`training_size` vectors; until then its vectors sit in an exact ``Flat`` staging
index that answers every query, so a stream that starts with a few frames is searchable at once.

>>> import numpy as np, tempfile
>>> from operators.stores.lineage_store import LineageStore
>>> root = tempfile.mkdtemp()
>>> with LineageStore(root + "/lineage") as store:
...     position = store.write_vectors(np.arange(1, 5), np.eye(4, dtype=np.float32))
>>> shard = LiveShard(root + "/index", 0, 1, dim=4, store=root + "/lineage")
>>> shard.index.ntotal, shard.position
(4, 1)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from operators.index.routing import route
from operators.index.shard import IndexShard, as_ids
from operators.stores.lineage_store import LineageStore
from streamvision.core.errors import ConfigError, InputError

log = logging.getLogger(__name__)

SNAPSHOT_META = "snapshot.json"
SNAPSHOT_INDEX = "index.faiss"


#: Vectors an index that needs training (``SQ8``, ``PQ``) waits for before it trains; ``IVF``
#: indexes wait for ``IVF_POINTS_PER_LIST`` per inverted list (FAISS's own advice).
MIN_TRAINING_VECTORS = 10_000
IVF_POINTS_PER_LIST = 39


def training_size(index: IndexShard) -> int:
    """How many vectors ``index`` is trained on (0 for an index that needs no training)."""
    if index.is_trained:
        return 0
    ivf = faiss.try_extract_index_ivf(faiss.downcast_index(index.index.index))
    return max(MIN_TRAINING_VECTORS, IVF_POINTS_PER_LIST * ivf.nlist if ivf is not None else 0)


def shard_dir(root: str | Path, shard: int, shards: int) -> Path:
    """Directory of shard ``shard`` of ``shards`` under ``root``."""
    return Path(root) / f"shard-{shard}-of-{shards}"


class LiveShard:
    """One :class:`IndexShard` kept equal to the store's vectors that route to it.

    Args:
        root: the collection's index directory (shared by all its shards).
        shard: this shard's number, ``0 <= shard < shards``.
        shards: number of shards (patch ids are routed with :func:`route`).
        dim: vector dimension.
        factory: ``index_factory`` string.
        normalized: require unit-norm vectors.
        append_only: never replace or remove (eligible for GPU).
        device: ``"cpu"``, ``"gpu"`` or ``None`` (choose).
        store: the lineage store directory to replay from (``None``: nothing to replay).

    Raises:
        ConfigError: an existing snapshot was made with another factory or dimension.
        InputError: bad factory or dimension.
    """

    def __init__(
        self,
        root: str | Path,
        shard: int,
        shards: int,
        dim: int,
        factory: str = "Flat",
        *,
        normalized: bool = True,
        append_only: bool = False,
        device: str | None = None,
        store: str | Path | None = None,
    ) -> None:
        if not 0 <= shard < shards:
            raise ConfigError(f"shard {shard} is not in [0, {shards})")
        self.shard, self.shards = shard, shards
        self.dir = shard_dir(root, shard, shards)
        self.store = None if store is None else Path(store)
        self._options = {"normalized": normalized, "append_only": append_only, "device": device}
        self._unsaved = True  # whether the index differs from its snapshot file (none yet)
        self.index, self.position = self._load(dim, factory)
        self._staging = None if self.index.is_trained else IndexShard(dim, "Flat", **self._options)
        self.snapshot_position = self.position
        self.replayed = self._replay()

    # ------------------------------------------------------------------ recovery
    def _load(self, dim: int, factory: str) -> tuple[IndexShard, int]:
        meta_path, index_path = self.dir / SNAPSHOT_META, self.dir / SNAPSHOT_INDEX
        if not meta_path.exists() or not index_path.exists():
            return IndexShard(dim, factory, **self._options), 0
        try:
            meta = json.loads(meta_path.read_text())
            fields = {"factory": str, "dim": int, "ntotal": int, "position": int}
            if not isinstance(meta, dict) or any(not isinstance(meta.get(k), t) or isinstance(meta.get(k), bool)
                                                 for k, t in fields.items()):
                raise InputError(f"{meta_path} is not a snapshot record ({', '.join(fields)})")
            if meta["factory"] != factory or meta["dim"] != dim:
                raise ConfigError(
                    f"{self.dir} holds a {meta['factory']!r} index of dim {meta['dim']}, "
                    f"not {factory!r} of dim {dim}; use another directory or the same settings"
                )
            index = IndexShard.load(index_path, factory=factory, mapped=True, **self._options)
            if index.ntotal != int(meta["ntotal"]):
                raise InputError(f"{index_path} holds {index.ntotal} vectors, its snapshot says {meta['ntotal']}")
            self._unsaved = False
            return index, int(meta["position"])
        except ConfigError:
            raise
        except (InputError, ValueError, KeyError, TypeError) as exc:
            log.warning("shard snapshot %s is unreadable (%s): rebuilding it from the store", self.dir, exc)
            return IndexShard(dim, factory, **self._options), 0

    def _replay(self) -> int:
        """Apply the store's vectors written after :attr:`position` that route here."""
        if self.store is None or not (self.store / "CURRENT").exists():
            return 0
        done = 0
        with LineageStore(self.store, read_only=True) as store:
            for position, ids, vectors in store.vectors_since(self.position):
                mine = route(ids, self.shards) == self.shard
                done += self.apply(position, ids[mine], vectors[mine])
        return done

    # ------------------------------------------------------------------ writes
    def train(self, sample: np.ndarray) -> None:
        """Train the index (``IVF`` / ``PQ``) and snapshot it at once, so a restart keeps the training."""
        if self.index.is_trained:
            return
        self._train_from_staging(sample)
        self.snapshot()

    def apply(self, position: int, ids: np.ndarray, vectors: np.ndarray) -> int:
        """Upsert vectors the store wrote at ``position``; returns how many were given.

        An untrained index (``IVF``...) trains on its first vectors.
        """
        ids = as_ids(ids)
        if len(ids):
            self._unsaved = True
            if self._staging is None:
                self.index.upsert(ids, vectors)
            else:
                self._staging.upsert(ids, vectors)
                if self._staging.ntotal >= training_size(self.index):
                    self._train_from_staging()
        self.position = max(self.position, int(position))
        return len(ids)

    def _train_from_staging(self, sample: np.ndarray | None = None) -> None:
        """Train on ``sample`` (default: the staged vectors), then move the staged vectors in."""
        assert self._staging is not None
        held = self._staging.ids()
        staged = self._staging.reconstruct(held)
        self.index.train(staged if sample is None else sample)
        self._unsaved = True
        if len(held):
            self.index.upsert(held, staged)
        self._staging = None

    @property
    def active(self) -> IndexShard:
        """The index that answers: the staging ``Flat`` index until the real one is trained."""
        return self.index if self._staging is None else self._staging

    def snapshot(self) -> dict[str, Any]:
        """Write the index and the store position it covers (files renamed into place); the
        index file only if the shard changed since its last snapshot (an idle shard's stop
        writes a few bytes, not its vectors).

        A shard still staging (untrained) writes nothing: reopening replays its few vectors."""
        if self._staging is not None:
            return {"factory": self.index.factory, "dim": self.index.dim, "ntotal": self._staging.ntotal,
                    "position": self.snapshot_position, "staging": True}
        self.dir.mkdir(parents=True, exist_ok=True)
        if self._unsaved or not (self.dir / SNAPSHOT_INDEX).exists():
            self._unsaved = False  # before the save: a write during it leaves the shard unsaved
            try:
                self.index.save(self.dir / SNAPSHOT_INDEX)
            except BaseException:
                self._unsaved = True
                raise
        meta = {"factory": self.index.factory, "dim": self.index.dim, "ntotal": self.index.ntotal,
                "position": self.position}
        tmp = self.dir / (SNAPSHOT_META + ".tmp")
        tmp.write_text(json.dumps(meta))
        tmp.replace(self.dir / SNAPSHOT_META)
        self.snapshot_position = self.position
        return meta

    # ------------------------------------------------------------------ reads
    def search(self, queries: np.ndarray, k: int, ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """See :meth:`IndexShard.search`."""
        return self.active.search(queries, k, ids)

    def range_search(
        self, queries: np.ndarray, threshold: float, ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """See :meth:`IndexShard.range_search`."""
        return self.active.range_search(queries, threshold, ids)

    def items(self, ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, vectors)`` held (all, or those of ``ids`` that this shard holds)."""
        if ids is None:
            pick = self.active.ids()
        else:
            wanted = as_ids(ids)
            pick = wanted[self.active.contains(wanted)]
        return pick, self.active.reconstruct(pick)

    def stats(self) -> dict[str, Any]:
        """The index's stats plus shard number, replay count and the positions it covers."""
        return {
            **self.index.stats(),
            "ntotal": self.active.ntotal,
            "staging": self._staging is not None,
            "shard": self.shard,
            "shards": self.shards,
            "replayed": self.replayed,
            "position": self.position,
            "snapshot_position": self.snapshot_position,
        }
