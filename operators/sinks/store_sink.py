"""The store sink: a pipeline's patches into a collection (RocksDB record + index shards).

The sink is a :class:`~operators.sinks.collection_writer.CollectionWriter` over shards in
this process; when a live service serves the data directory, the Ray runtime hands the
batches to the service's writer instead (``cluster.service``), and the shards are the
service's actors. Either way a batch goes to RocksDB in one ``WriteBatch`` with the Kafka
offsets it completes (effectively-once), then to the shards; vectors are upserted by
patch id, so a replayed batch changes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from operators.base import Sink
from operators.index.sharded import ShardedIndex, ShardSet
from operators.sinks.collection_writer import MANIFEST, CollectionWriter, read_manifest
from operators.stores.frame_keeping import FrameKeeper
from streamvision.core.patches import PatchBatch
from streamvision.core.types import PatchType

__all__ = ["MANIFEST", "StoreSink", "local_shards", "read_manifest"]


def local_shards(data: Path, dim: int, factory: str, shards: int) -> ShardSet:
    """The shards of a data directory in this process (snapshot + replay of newer writes)."""
    return ShardedIndex.open(data, dim, factory, shards)


class StoreSink(Sink):
    """Write patches to a data directory.

    Args:
        data: the data directory.
        index_factory: FAISS ``index_factory`` string for the vectors of a new collection.
        shards: index shards of a new collection.
        featurizer: spec (``{"op": ..., "options": ...}``) of the featurizer feeding this
            sink; the dataflow fills it in from the graph.
        keep_index: hold the collection's shards in the sink (snapshotted at close, so that
            queries open fast). ``False`` writes the store only: the sink's memory stays flat
            on an endless stream, and readers replay the vectors written since the last
            snapshot. Ignored when a service serves ``data`` (its shards are the index).
        store_frames: how the pixels of Kafka input are kept (``segments``, ``source``,
            ``jpeg``, ``raw``, ``none``: :mod:`operators.stores.frame_keeping`); the plan pushes
            it down to the Kafka sources feeding this sink, which encode where the frames are
            decoded. ``None``: as the sources say (``segments`` by default). File input is
            always kept as its original (DeepLens' encoded file), so only ``none``,
            ``source`` and ``segments`` go with it.
        segment_seconds: length of the H.264 segments (``segments``).
    """

    name = "store"

    def __init__(
        self,
        *,
        data: str,
        index_factory: str = "Flat",
        shards: int = 2,
        featurizer: dict[str, Any] | None = None,
        keep_index: bool = True,
        store_frames: str | None = None,
        segment_seconds: float = 2.0,
    ) -> None:
        self.data = str(data)
        self.index_factory = index_factory
        self.shards = shards
        self.featurizer = featurizer
        self.keep_index = keep_index
        if store_frames is not None:
            FrameKeeper(store_frames, segment_seconds=segment_seconds)  # fail fast on a bad format
        self.store_frames = store_frames
        self.segment_seconds = segment_seconds
        self.dim: int | None = None
        self._writer: CollectionWriter | None = None
        self.last_offsets: dict[tuple[str, int], int] = {}

    def input_type(self) -> PatchType:
        """Any patches; vector patches of one dimension are indexed."""
        return PatchType()

    def bind(self, upstream: PatchType, featurizer: dict[str, Any] | None) -> None:
        """Learn the vector dimension and featurizer from the validated graph."""
        self.dim = upstream.dim
        if self.featurizer is None:
            self.featurizer = featurizer

    def writer_options(self) -> dict[str, Any]:
        """What a :class:`CollectionWriter` for this sink is opened with (here or in a service)."""
        return {"index_factory": self.index_factory, "shards": self.shards, "featurizer": self.featurizer,
                "dim": self.dim}

    def open(self) -> None:
        """Open (or create) the collection; check it matches this pipeline's vectors."""
        if self._writer is None:
            self._writer = CollectionWriter(self.data, local_shards if self.keep_index else None,
                                            **self.writer_options())

    def committed_offsets(self) -> dict[tuple[str, int], int]:
        """Offsets durably done, as stored in RocksDB."""
        self.open()
        assert self._writer is not None
        return self._writer.committed_offsets()

    def write(self, batch: PatchBatch) -> int:
        """Write a batch; return patches written. :attr:`last_offsets` holds the offsets it completed."""
        self.open()
        assert self._writer is not None
        ack = self._writer.write(batch)
        self.last_offsets = ack["offsets"]
        return int(ack["written"])

    def close(self) -> None:
        """Snapshot the shards and close RocksDB."""
        if self._writer is not None:
            self._stats = self._writer.stats()
            self._writer.close()
            self._writer = None

    def stats(self) -> dict[str, Any]:
        """Patches written and vectors stored in this run, and vectors held in the sink's shards."""
        if self._writer is not None:
            return self._writer.stats()
        return getattr(self, "_stats", {"written": 0, "vectors": 0, "indexed": 0})
