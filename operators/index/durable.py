"""A shard that survives restarts: snapshot + write-ahead log + replay from the lineage store.

On disk, shard ``s`` of ``n`` lives in ``ROOT/shard-s-of-n/``:

=================  ===========================================================
``index.faiss``    the last snapshot (``faiss.write_index``; our own file)
``snapshot.json``  factory, dim, options, ``ntotal`` and the offsets it covers
``log/``           RocksDB (WAL on): family ``vectors`` (id -> float32 bytes)
                   upserted since the snapshot, family ``removed`` (tombstones)
=================  ===========================================================

Every upsert / removal is written to ``log`` (one ``WriteBatch``) before the index
changes, so a killed process loses nothing. Opening a shard loads the snapshot, applies
the tombstones, replays the log, then replays the newer vectors of the pipeline's lineage store (its ``vectors``
family, opened read-only): those routed to this shard that the index lacks and that
were not removed. Replay is idempotent (ids are deterministic), so it needs no exact
offset bookkeeping; the offsets in ``snapshot.json`` tell which input the snapshot is
known to cover. :meth:`DurableShard.snapshot` writes a new snapshot and empties the log.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import rocksdict

from operators.index.routing import route
from operators.index.shard import IndexShard, as_ids
from operators.stores.lineage_store import LineageStore
from streamvision.errors import ConfigError, InputError
from streamvision.lineage import id_bytes, id_from_bytes

_FAMILIES = ("vectors", "removed")
_REPLAY_BATCH = 16384
Offsets = dict[tuple[str, int], int]


def shard_dir(root: str | Path, shard: int, shards: int) -> Path:
    """Directory of shard ``shard`` of ``shards`` under ``root``."""
    return Path(root) / f"shard-{shard}-of-{shards}"


def _open_log(path: Path) -> rocksdict.Rdict:
    opts = rocksdict.Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.create_missing_column_families(True)
    families = {name: rocksdict.Options(raw_mode=True) for name in _FAMILIES}
    return rocksdict.Rdict(str(path), opts, column_families=families)


def _batches(items: Iterator[tuple[int, bytes]], dim: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    ids: list[int] = []
    rows: list[bytes] = []
    for pid, raw in items:
        ids.append(pid)
        rows.append(raw)
        if len(ids) == _REPLAY_BATCH:
            yield np.array(ids, np.int64), np.frombuffer(b"".join(rows), np.float32).reshape(-1, dim)
            ids, rows = [], []
    if ids:
        yield np.array(ids, np.int64), np.frombuffer(b"".join(rows), np.float32).reshape(-1, dim)


class DurableShard:
    """One :class:`IndexShard` with a snapshot, a write-ahead log and store replay.

    Args:
        root: the index directory (shared by all shards of a service).
        shard: this shard's number, ``0 <= shard < shards``.
        shards: number of shards (patch ids are routed with :func:`route`).
        dim: vector dimension.
        factory: ``index_factory`` string.
        normalized: require unit-norm vectors.
        append_only: never replace or remove (eligible for GPU).
        device: ``"cpu"``, ``"gpu"`` or ``None`` (choose).
        store: the pipeline's lineage store directory to replay from, or ``None``.
        wal: log every upsert before applying it (turn off only where the vectors are
            already durable elsewhere, e.g. in the lineage store, or for benchmarks).

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
        wal: bool = True,
    ) -> None:
        if not 0 <= shard < shards:
            raise ConfigError(f"shard {shard} is not in [0, {shards})")
        self.shard, self.shards = shard, shards
        self.dir = shard_dir(root, shard, shards)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.store = None if store is None else Path(store)
        self.wal = wal
        options = {"normalized": normalized, "append_only": append_only, "device": device}
        meta = self._read_meta()
        if meta is None:
            self.index = IndexShard(dim, factory, **options)
            self.offsets: Offsets = {}
            self._write_snapshot()  # records factory and dim at once
        else:
            if meta["factory"] != factory or meta["dim"] != dim:
                raise ConfigError(
                    f"{self.dir} holds a {meta['factory']!r} index of dim {meta['dim']}, "
                    f"not {factory!r} of dim {dim}; use another directory or the same settings"
                )
            self.index = IndexShard.load(self.dir / "index.faiss", factory=factory, **options)
            self.offsets = {(t, int(p)): int(o) for t, p, o in meta["offsets"]}
        try:
            self._log = _open_log(self.dir / "log")
        except Exception as exc:  # rocksdict raises a bare Exception for a held lock
            raise ConfigError(f"cannot open {self.dir / 'log'} (is another service using it?): {exc}") from exc
        self._vectors = self._log.get_column_family("vectors")
        self._removed = self._log.get_column_family("removed")
        self._handles = {name: self._log.get_column_family_handle(name) for name in _FAMILIES}
        self._apply_tombstones()
        self.replayed = {"log": self._replay(self._log_items()), "store": self._replay_store()}

    # ------------------------------------------------------------------ recovery
    def _read_meta(self) -> dict[str, Any] | None:
        path = self.dir / "snapshot.json"
        if not path.exists() or not (self.dir / "index.faiss").exists():
            return None
        return json.loads(path.read_text())

    def _apply_tombstones(self) -> None:
        """Remove from the loaded snapshot the ids removed after it was written."""
        gone = np.array([id_from_bytes(k) for k in self._removed.keys()], np.int64)
        if len(gone) and not self.index.append_only:
            self.index.remove(gone)

    def _log_items(self) -> Iterator[tuple[int, bytes]]:
        for key, raw in self._vectors.items():
            yield id_from_bytes(key), raw

    def _store_items(self, store: LineageStore) -> Iterator[tuple[int, bytes]]:
        """Stored vectors routed to this shard that the index lacks and that were not removed."""
        held = set(self.index.ids().tolist())
        chunk: list[tuple[int, bytes]] = []

        def mine(rows: list[tuple[int, bytes]]) -> Iterator[tuple[int, bytes]]:
            owner = route(np.array([pid for pid, _ in rows], np.int64), self.shards)
            for (pid, raw), s in zip(rows, owner.tolist()):
                if s == self.shard and pid not in held and self._removed.get(id_bytes(pid)) is None:
                    yield pid, raw

        for key, raw in store.scan("vectors"):
            chunk.append((id_from_bytes(key), raw))
            if len(chunk) == _REPLAY_BATCH:
                yield from mine(chunk)
                chunk = []
        if chunk:
            yield from mine(chunk)

    def _replay(self, items: Iterator[tuple[int, bytes]]) -> int:
        done = 0
        for ids, x in _batches(items, self.index.dim):
            if not self.index.is_trained:
                self.index.train(x)
            self.index.upsert(ids, x)
            done += len(ids)
        return done

    def _replay_store(self) -> int:
        if self.store is None or not (self.store / "CURRENT").exists():
            return 0
        with LineageStore(self.store, read_only=True) as store:
            return self._replay(self._store_items(store))

    # ------------------------------------------------------------------ writes
    def train(self, sample: np.ndarray) -> None:
        """Train the index and snapshot it at once (so a restart keeps the training)."""
        if self.index.is_trained:
            return
        self.index.train(sample)
        self.snapshot(self.offsets)

    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> int:
        """Log, then insert or replace; returns the shard's new size."""
        ids = as_ids(ids)
        x = self.index.check_vectors(vectors)
        if len(ids) != len(x):
            raise InputError(f"{len(ids)} ids for {len(x)} vectors")
        if not self.index.is_trained:
            raise InputError(f"index {self.index.factory!r} must be trained first: call train(sample)")
        wb = rocksdict.WriteBatch(raw_mode=True)
        for pid, row in zip(ids.tolist(), x):
            key = id_bytes(pid)
            if self.wal:
                wb.put(key, row.tobytes(), self._handles["vectors"])
            wb.delete(key, self._handles["removed"])
        self._log.write(wb)
        self.index.upsert(ids, x)
        return self.index.ntotal

    def remove(self, ids: np.ndarray) -> int:
        """Tombstone, then remove; returns how many were present."""
        ids = as_ids(ids)
        if self.index.append_only:
            raise InputError(f"shard {self.index.factory!r} is append-only: it cannot remove ids")
        wb = rocksdict.WriteBatch(raw_mode=True)
        for pid in ids.tolist():
            key = id_bytes(pid)
            wb.put(key, b"", self._handles["removed"])
            wb.delete(key, self._handles["vectors"])
        self._log.write(wb)
        return self.index.remove(ids)

    def snapshot(self, offsets: Offsets | None = None) -> dict[str, Any]:
        """Write the index and the offsets it covers, then empty the log of vectors.

        The index file is renamed into place before the log is cleared, so a crash at any
        point leaves either the old snapshot plus the log or the new one.
        """
        if offsets is not None:
            self.offsets = {(str(t), int(p)): int(o) for (t, p), o in offsets.items()}
        meta = self._write_snapshot()
        wb = rocksdict.WriteBatch(raw_mode=True)
        for key in self._vectors.keys():
            wb.delete(key, self._handles["vectors"])
        self._log.write(wb)
        return meta

    def _write_snapshot(self) -> dict[str, Any]:
        self.index.save(self.dir / "index.faiss")
        meta = {
            "factory": self.index.factory,
            "dim": self.index.dim,
            "ntotal": self.index.ntotal,
            "offsets": [[t, p, o] for (t, p), o in sorted(self.offsets.items())],
        }
        tmp = self.dir / "snapshot.json.tmp"
        tmp.write_text(json.dumps(meta))
        tmp.replace(self.dir / "snapshot.json")
        return meta

    # ------------------------------------------------------------------ reads
    def search(self, queries: np.ndarray, k: int, ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """See :meth:`IndexShard.search`."""
        return self.index.search(queries, k, ids)

    def range_search(
        self, queries: np.ndarray, threshold: float, ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """See :meth:`IndexShard.range_search`."""
        return self.index.range_search(queries, threshold, ids)

    def items(self, ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, vectors)`` held (all, or those of ``ids`` that this shard holds)."""
        held = self.index.ids()
        pick = held if ids is None else held[np.isin(held, as_ids(ids))]
        return pick, self.index.reconstruct(pick)

    def stats(self) -> dict[str, Any]:
        """The index's stats plus shard number, replay counts, log size and snapshot offsets."""
        return {
            **self.index.stats(),
            "shard": self.shard,
            "shards": self.shards,
            "replayed": dict(self.replayed),
            "log_vectors": sum(1 for _ in self._vectors.keys()),
            "snapshot_offsets": [[t, p, o] for (t, p), o in sorted(self.offsets.items())],
        }

    def close(self) -> None:
        """Close the log (releasing its lock); the object is unusable afterwards."""
        del self._vectors, self._removed, self._handles  # column families pin the database
        self._log.close()
