"""The store sink: lineage and metadata into RocksDB, vectors into a FAISS index.

A data directory holds::

    DIR/manifest.json     vector dimension, index factory, and the featurizer's spec
                          (so that queries featurize a query image the same way)
    DIR/lineage/          RocksDB (see operators.stores.lineage_store)
    DIR/index/main.faiss  the FAISS index snapshot

Each batch goes to RocksDB in one ``WriteBatch`` together with the Kafka offsets it
completes (effectively-once); vectors are upserted by patch id, so a replayed batch
changes nothing. The index is snapshotted every ``snapshot_every_s`` seconds and at
close; on open, vectors written to RocksDB after the last snapshot are replayed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from operators.base import Sink
from operators.index.shard import IndexShard, as_matrix
from operators.sinks.offsets import OffsetTracker
from operators.stores.lineage_store import LineageStore
from streamvision.errors import ConfigError
from streamvision.patches import PatchBatch
from streamvision.types import PatchType

MANIFEST = "manifest.json"
INDEX_FILE = Path("index") / "main.faiss"
LINEAGE_DIR = "lineage"


def read_manifest(data: str | Path) -> dict[str, Any]:
    """The manifest of a data directory, or ``{}`` if there is none yet."""
    path = Path(data) / MANIFEST
    return json.loads(path.read_text()) if path.exists() else {}


def open_index(data: str | Path, store: LineageStore, dim: int, factory: str) -> IndexShard:
    """Load the index snapshot of ``data`` and replay vectors stored after it."""
    path = Path(data) / INDEX_FILE
    index = IndexShard.load(path) if path.exists() else IndexShard(dim, factory)
    stored = store.count("vectors")
    if index.ntotal != stored:
        ids, rows = [], []
        for pid, vector in store.iter_vectors():
            ids.append(pid)
            rows.append(vector)
        index = IndexShard(dim, factory)
        if ids:
            index.upsert(np.asarray(ids, np.int64), np.stack(rows))
    return index


#: Least gap between snapshots, in multiples of the last snapshot's duration.
SNAPSHOT_GAP_FACTOR = 20.0


class StoreSink(Sink):
    """Write patches to a data directory (RocksDB lineage + FAISS vectors).

    Args:
        data: the data directory.
        index_factory: FAISS ``index_factory`` string for the vectors.
        snapshot_every_s: least seconds between index snapshots. A snapshot rewrites the
            whole index, so the gap also stays at least ``SNAPSHOT_GAP_FACTOR`` times the last
            snapshot's duration (at most ~5 % of the sink's time); vectors written after the
            last snapshot are replayed from RocksDB on open, so none is lost.
        featurizer: spec (``{"op": ..., "options": ...}``) of the featurizer feeding this
            sink; the dataflow fills it in from the graph.
        keep_index: hold the FAISS index in the sink and snapshot it, so that queries open
            fast. ``False`` stores vectors and lineage only: the sink's memory stays flat on an
            endless stream, and readers build the index from the stored vectors
            (:func:`open_index`, as ``streamvision.query.connect`` does).
    """

    name = "store"

    def __init__(
        self,
        *,
        data: str,
        index_factory: str = "Flat",
        snapshot_every_s: float = 5.0,
        featurizer: dict[str, Any] | None = None,
        keep_index: bool = True,
    ) -> None:
        self.data = str(data)
        self.keep_index = keep_index
        self.index_factory = index_factory
        self.snapshot_every_s = snapshot_every_s
        self.featurizer = featurizer
        self.dim: int | None = None
        self._store: LineageStore | None = None
        self._index: IndexShard | None = None
        self._tracker: OffsetTracker | None = None
        self._next_snapshot = 0.0
        self._written = 0
        self._vectors = 0
        self.last_offsets: dict[tuple[str, int], int] = {}

    def input_type(self) -> PatchType:
        """Any patches; vector patches of one dimension are indexed."""
        return PatchType()

    def bind(self, upstream: PatchType, featurizer: dict[str, Any] | None) -> None:
        """Learn the vector dimension and featurizer from the validated graph."""
        self.dim = upstream.dim
        if self.featurizer is None:
            self.featurizer = featurizer

    def open(self) -> None:
        """Open (or create) the data directory; check it matches this pipeline's vectors."""
        root = Path(self.data)
        root.mkdir(parents=True, exist_ok=True)
        manifest = read_manifest(root)
        if manifest.get("dim") and self.dim and manifest["dim"] != self.dim:
            raise ConfigError(
                f"{root} holds {manifest['dim']}-d vectors ({manifest.get('featurizer')}); "
                f"this pipeline makes {self.dim}-d vectors: use another --data directory"
            )
        self.dim = self.dim or manifest.get("dim")
        self._store = LineageStore(root / LINEAGE_DIR)
        self._tracker = OffsetTracker(self._store.offsets())
        if not self.keep_index:
            (root / INDEX_FILE).unlink(missing_ok=True)  # it would fall behind the stored vectors
        elif self.dim:
            factory = manifest.get("factory", self.index_factory)
            self._index = open_index(root, self._store, self.dim, factory)
        if self.dim:
            self._write_manifest()

    def _write_manifest(self) -> None:
        manifest = {"version": 1, "dim": self.dim, "factory": self.index_factory, "featurizer": self.featurizer}
        path = Path(self.data) / MANIFEST
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(manifest, indent=2))
        tmp.replace(path)

    def committed_offsets(self) -> dict[tuple[str, int], int]:
        """Offsets durably done, as stored in RocksDB."""
        if self._store is None:
            self.open()
        assert self._tracker is not None
        return self._tracker.watermarks

    def write(self, batch: PatchBatch) -> int:
        """Write a batch; return patches written. :attr:`last_offsets` holds the offsets it completed."""
        if self._store is None:
            self.open()
        assert self._store is not None and self._tracker is not None
        if batch.vectors is not None and len(batch):
            if self.dim is None:
                self.dim = batch.dim
                self._write_manifest()
            if self.keep_index:
                if self._index is None:
                    self._index = IndexShard(self.dim, self.index_factory)  # type: ignore[arg-type]
                self._index.upsert(batch.ids, batch.vectors)  # checks dim and finite values first
            else:
                as_matrix(batch.vectors, self.dim)  # type: ignore[arg-type]  # the same checks
            self._vectors += len(batch)
        self.last_offsets = self._tracker.complete(batch.meta.get("offset_ranges", []))  # type: ignore[arg-type]
        written = self._store.write_patches(batch, offsets=self.last_offsets)
        self._written += written
        if time.monotonic() >= self._next_snapshot:
            self.snapshot()
        return written

    def snapshot(self) -> None:
        """Persist the index now."""
        started = time.monotonic()
        if self._index is not None:
            self._index.save(Path(self.data) / INDEX_FILE)
        now = time.monotonic()
        self._next_snapshot = now + max(self.snapshot_every_s, SNAPSHOT_GAP_FACTOR * (now - started))

    def close(self) -> None:
        """Snapshot the index and close RocksDB."""
        if self._store is not None:
            self.snapshot()
            self._store.close()
            self._store = None
            self._index = None

    def stats(self) -> dict[str, Any]:
        """Patches written and vectors stored in this run, and vectors held in the sink's index."""
        return {"written": self._written, "vectors": self._vectors,
                "indexed": self._index.ntotal if self._index else 0}
