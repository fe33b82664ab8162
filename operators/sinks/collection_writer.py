"""The one writer of a collection: the store first, then the index shards.

A collection is a data directory::

    DIR/manifest.json     vector dimension, index factory, shard count and the featurizer's
                          spec (so that queries featurize a query image the same way)
    DIR/lineage/          RocksDB, the record (see operators.stores.lineage_store)
    DIR/index/            one snapshot per shard (see operators.index.live_shard)

:meth:`CollectionWriter.write` puts a batch's lineage, metadata, vectors and the Kafka
offsets it completes in one ``WriteBatch``, then applies the vectors to the shards they
route to; only then does it report the offsets done, so a committed frame is answerable by
the next query (read-your-writes). The batch's kept pixels (``meta["kept"]``, see
:mod:`operators.stores.frame_keeping`) go in the same ``WriteBatch``; a
:class:`~operators.stores.segmenter.Segmenter` later compacts kept messages into H.264
segments where the source asked for them. The shards are whatever :class:`ShardSet` the caller
opens: in-process threads (a pipeline without a service, the embedded client) or Ray
actors (the live service). A killed shard replays from the store; a killed writer
re-reads its offsets from the store.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from operators.index.shard import as_ids, as_matrix, check_normalized
from operators.index.sharded import STORE_DIRNAME, ShardSet
from operators.sinks.offsets import OffsetTracker
from operators.stores.lineage_store import LineageStore
from operators.stores.segmenter import Segmenter
from streamvision.core.errors import ConfigError, InputError
from streamvision.core.patches import PatchBatch

MANIFEST = "manifest.json"
#: A collection's shards are snapshotted once this many vectors were written since the last
#: snapshot (a snapshot rewrites the whole index; a restart replays at most this many).
SNAPSHOT_EVERY_VECTORS = 250_000

#: ``open_shards(data_dir, dim, factory, shards) -> ShardSet``.
ShardOpener = Callable[[Path, int, str, int], ShardSet]


def read_manifest(data: str | Path) -> dict[str, Any]:
    """The manifest of a data directory, or ``{}`` if there is none yet.

    Raises:
        ConfigError: the manifest is unreadable, not a JSON object, written by a newer
            StreamVision (a higher ``version``), or a field has the wrong type (``dim`` and
            ``shards`` positive integers, ``factory`` a string, ``featurizer`` an object).
    """
    path = Path(data) / MANIFEST
    if not path.exists():
        return {}
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise ConfigError(f"{path} is not a readable JSON manifest ({exc}); move it away to start over") from exc
    if not isinstance(manifest, dict):
        raise ConfigError(f"{path} must hold a JSON object, got {type(manifest).__name__}")

    def positive_int(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value > 0

    newest = 2  # the version CollectionWriter._write_manifest writes
    version = manifest.get("version", 1)
    if not positive_int(version):
        raise ConfigError(f"{path}: \"version\" must be a positive integer, got {version!r}")
    if version > newest:
        raise ConfigError(f"{path} has manifest version {version}, newer than this StreamVision reads "
                          f"({newest}): upgrade StreamVision to open this directory")
    problems = [f"\"{key}\" must be {what}, got {manifest[key]!r}" for key, what, ok in (
        ("dim", "a positive integer or null", lambda v: v is None or positive_int(v)),
        ("shards", "a positive integer", positive_int),
        ("factory", "a FAISS index_factory string", lambda v: isinstance(v, str) and bool(v)),
        ("featurizer", "an object or null", lambda v: v is None or isinstance(v, dict)),
    ) if key in manifest and not ok(manifest[key])]
    if problems:
        raise ConfigError(f"{path} is not a valid manifest: {'; '.join(problems)}; "
                          "fix it or move it away to start over")
    return manifest


class CollectionWriter:
    """Writes patches and imported embeddings into one collection.

    Args:
        data: the data directory.
        open_shards: opens the collection's shards once the vector dimension is known;
            ``None`` writes the store only (readers replay it into their own shards).
        index_factory: FAISS ``index_factory`` string for a new collection.
        shards: shard count for a new collection.
        featurizer: spec (``{"op": ..., "options": ...}``) of the featurizer feeding it.
        dim: vector dimension, when known before the first batch.
        snapshot_every_vectors: snapshot the shards after this many vectors.

    Raises:
        ConfigError: the directory holds vectors of another dimension.
    """

    def __init__(
        self,
        data: str | Path,
        open_shards: ShardOpener | None,
        *,
        index_factory: str = "Flat",
        shards: int = 2,
        featurizer: dict[str, Any] | None = None,
        dim: int | None = None,
        snapshot_every_vectors: int = SNAPSHOT_EVERY_VECTORS,
    ) -> None:
        self.data = Path(data)
        try:
            self.data.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the data directory {self.data}: {exc.strerror or exc}") from exc
        manifest = read_manifest(self.data)
        if manifest.get("dim") and dim and manifest["dim"] != dim:
            raise ConfigError(
                f"{self.data} holds {manifest['dim']}-d vectors ({manifest.get('featurizer')}); "
                f"this pipeline makes {dim}-d vectors: use another --data directory"
            )
        self.dim: int | None = manifest.get("dim") or dim
        self.factory = manifest.get("factory", index_factory)
        self.shard_count = int(manifest.get("shards", shards))
        self.featurizer = manifest.get("featurizer") or featurizer
        self._open_shards = open_shards
        self.store = LineageStore(self.data / STORE_DIRNAME)
        self.segmenter = Segmenter(self.store)
        self.tracker = OffsetTracker(self.store.offsets(), self.store.offset_state())
        self.index: ShardSet | None = None
        self.snapshot_every_vectors = snapshot_every_vectors
        self._since_snapshot = 0
        self.last_snapshot_s = 0.0
        self.written = 0
        self.vectors = 0
        if self.dim:
            self._start_index()

    def _start_index(self) -> None:
        self._write_manifest()
        if self._open_shards is not None and self.index is None:
            assert self.dim is not None
            self.index = self._open_shards(self.data, self.dim, self.factory, self.shard_count)

    def _write_manifest(self) -> None:
        manifest = {"version": 2, "dim": self.dim, "factory": self.factory, "shards": self.shard_count,
                    "featurizer": self.featurizer}
        path = self.data / MANIFEST
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(manifest, indent=2))
        tmp.replace(path)

    def _vectors(self, vectors: np.ndarray) -> np.ndarray:
        """Checked vectors (dimension, finite, unit norm where the index needs it), or raise."""
        if self.dim is None:
            self.dim = int(np.asarray(vectors).shape[-1])
            self._start_index()
        if self.index is not None:
            return self.index.check(np.zeros(len(vectors), np.int64), vectors)[1]
        x = as_matrix(vectors, self.dim)
        check_normalized(x)  # readers' shards require unit norm: a stored bad row would stop their replay
        return x

    def adopt(self, featurizer: dict[str, Any] | None, dim: int | None) -> None:
        """Take a pipeline's featurizer spec and dimension when the collection records none yet.

        Raises:
            ConfigError: the collection holds vectors of another dimension.
        """
        if dim and self.dim and dim != self.dim:
            raise ConfigError(f"{self.data} holds {self.dim}-d vectors ({self.featurizer}); this pipeline "
                              f"makes {dim}-d vectors: write to another collection")
        changed = (featurizer and not self.featurizer) or (dim and not self.dim)
        self.featurizer = self.featurizer or featurizer
        if dim and not self.dim:
            self.dim = dim
            self._start_index()
        elif changed and self.dim:
            self._write_manifest()

    def committed_offsets(self) -> dict[tuple[str, int], int]:
        """Offsets durably done, as stored: what sources resume from."""
        return self.tracker.watermarks

    def write(self, batch: PatchBatch) -> dict[str, Any]:
        """Write a batch to the store, then its vectors to the shards.

        Returns:
            ``{"written": n, "offsets": {(topic, partition): next}, "position": p}``: the
            offsets this batch completed (done: stored and applied to the shards).

        Raises:
            InputError: bad vectors (nothing is written).
            Exception: whatever encoding or storing a row raised; nothing is written then and
                the offsets stay as they were (the runtime may retry message by message).
        """
        vectors = self._vectors(batch.vectors) if batch.vectors is not None and len(batch) else None
        before = self.tracker.copy()
        try:
            offsets = self.tracker.complete(batch.meta.get("offset_ranges", []))  # type: ignore[arg-type]
            with self.segmenter.replacing:  # no segment replaces a message between the check and the write
                kept = self.store.not_in_segments(batch.meta.get("kept") or [])  # type: ignore[arg-type]
                written = self.store.write_patches(batch, offsets=offsets, offset_state=self.tracker.state_changes(),
                                                   kept=kept)
        except BaseException:
            self.tracker = before  # nothing was written: the batch's offsets are not done
            raise
        self.segmenter.wrote(kept)
        if vectors is not None:
            self._apply(batch.ids, vectors)
        self.written += written
        ranges = batch.meta.get("offset_ranges", [])
        return {"written": written, "offsets": {**self.tracker.durable(ranges), **offsets},  # type: ignore[arg-type]
                "position": self.store.position}

    def import_vectors(self, ids: np.ndarray, vectors: np.ndarray, metas: list[dict[str, Any]] | None = None) -> int:
        """Store embeddings that have no frame behind them (bulk import), then index them.

        Returns:
            The store position of this write.

        Raises:
            InputError: bad ids or vectors, or a metadata list of another length.
        """
        ids = as_ids(ids)
        x = self._vectors(vectors)
        if len(ids) != len(x) or (metas is not None and len(metas) != len(ids)):
            raise InputError(f"{len(ids)} ids, {len(x)} vectors and {len(metas or ids)} metadata rows must agree")
        position = self.store.write_vectors(ids, x, metas)
        self._apply(ids, x)
        return position

    def _apply(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.vectors += len(ids)
        if self.index is None:
            return
        self.index.apply(self.store.position, ids, vectors)
        self._since_snapshot += len(ids)
        if self._since_snapshot >= self.snapshot_every_vectors:
            self.snapshot()

    def snapshot(self) -> None:
        """Snapshot every shard now (each records the store position it covers)."""
        if self.index is not None:
            started = time.monotonic()
            self.index.snapshot()
            self.last_snapshot_s = time.monotonic() - started
        self._since_snapshot = 0

    def stats(self) -> dict[str, Any]:
        """Patches and vectors written by this writer, and the store position."""
        return {"written": self.written, "vectors": self.vectors, "position": self.store.position,
                "indexed": self.index.ntotal if self.index is not None else 0,
                "segments": self.segmenter.segments, "segments_failed": self.segmenter.failed,
                "segments_queued": self.segmenter.queued}

    def close(self, *, finish_compaction: bool = True) -> None:
        """Snapshot the shards (so that the next open replays nothing), release them, close the
        store. ``finish_compaction``: compact the kept runs handed over first (a pipeline's end);
        otherwise only the one in progress, the rest kept as their messages for the next writer
        (a service's stop, which a long queue would hold up)."""
        self.snapshot()
        if self.index is not None:
            self.index.close()
        self.segmenter.close(finish=finish_compaction)
        self.store.close()
