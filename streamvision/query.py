"""Queries over a data directory: "what looks like this?" and "where did this come from?".

>>> import streamvision
>>> sv = streamvision.connect("data")                     # doctest: +SKIP
>>> for match in sv.similar("frame.png", k=5):            # doctest: +SKIP
...     print(match.patch_id, round(match.score, 3), match.lineage["frame_no"])
>>> sv.threshold(vector, 0.9)                             # doctest: +SKIP
>>> sv.lineage(patch_id)                                  # doctest: +SKIP

Results carry the score and the lineage: source file or Kafka coordinates, ``frame_no``,
timestamp, camera, bbox and label. A query image is featurized by the same featurizer
the data was ingested with (recorded in the data directory's manifest).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from operators import registry
from operators.base import OperatorContext
from operators.index.shard import IndexShard, as_matrix
from operators.sinks.store_sink import LINEAGE_DIR, open_index, read_manifest
from operators.sources.image_folder import read_image
from operators.stores.lineage_store import LineageStore
from streamvision.errors import ConfigError, InputError
from streamvision.frames import Frame, FrameBatch
from streamvision.lineage import FileKey, FrameKeyCodec


@dataclass(frozen=True)
class Match:
    """One query result: a patch id, its score (inner product) and where it came from."""

    patch_id: int
    score: float
    lineage: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


class Collection:
    """A read-only view of a data directory: its lineage store, index and featurizer.

    Args:
        data: the data directory written by ``streamvision ingest`` / a store sink.
    """

    def __init__(self, data: str | Path) -> None:
        self.data = Path(data)
        self.manifest = read_manifest(self.data)
        if not self.manifest.get("dim"):
            raise InputError(f"{self.data} holds no indexed vectors (run `streamvision ingest VIDEO --data {self.data}`)")
        self.store = LineageStore(self.data / LINEAGE_DIR, read_only=True)
        self.dim = int(self.manifest["dim"])
        self.index: IndexShard = open_index(self.data, self.store, self.dim, self.manifest.get("factory", "Flat"))
        self._featurizer: Any = None

    def featurize(self, image: str | Path | np.ndarray) -> np.ndarray:
        """The ``(1, dim)`` feature vector of an image (path or RGB array), as at ingest."""
        spec = self.manifest.get("featurizer")
        if not spec:
            raise ConfigError(f"{self.data} does not record its featurizer; query with a vector instead")
        if self._featurizer is None:
            self._featurizer = [registry.build("whole_frame", {}), registry.build(spec["op"], spec.get("options", {}))]
            for op in self._featurizer:
                op.setup(OperatorContext())
        pixels = read_image(image) if not isinstance(image, np.ndarray) else image
        batch: Any = FrameBatch.from_frames([Frame(FileKey("<query>", 0), 0.0, 0.0, np.ascontiguousarray(pixels))])
        for op in self._featurizer:
            batch = op.process(batch)
        return batch.vectors

    def _query_vectors(self, query: str | Path | np.ndarray) -> np.ndarray:
        if isinstance(query, np.ndarray) and query.dtype != np.uint8:
            return as_matrix(query, self.dim, "query vector")
        return self.featurize(query)

    def describe(self, patch_id: int, score: float) -> Match:
        """A :class:`Match` with the patch's lineage summarized."""
        meta = self.store.patch(patch_id) or {}
        key = FrameKeyCodec.decode(bytes.fromhex(meta["frame_key"])) if meta.get("frame_key") else None
        lineage = {k: meta.get(k) for k in ("camera", "frame_no", "ts", "wall_time", "bbox", "label", "model")}
        lineage["source"] = key.as_dict() if key is not None else None
        return Match(patch_id, float(score), lineage)

    def similar(self, query: str | Path | np.ndarray, k: int = 10) -> list[Match]:
        """The ``k`` patches most similar to an image (path or RGB array) or a feature vector."""
        if k < 1:
            raise InputError(f"k must be >= 1, got {k}")
        D, I = self.index.search(self._query_vectors(query)[:1], k)
        return [self.describe(int(i), float(d)) for d, i in zip(D[0], I[0]) if i != -1]

    def threshold(self, query: str | Path | np.ndarray, t: float) -> list[Match]:
        """Every patch whose inner product with the query is greater than ``t``, best first."""
        lims, D, I = self.index.range_search(self._query_vectors(query)[:1], t)
        order = np.argsort(-D[lims[0]:lims[1]], kind="stable")
        return [self.describe(int(I[j]), float(D[j])) for j in order]

    def lineage(self, patch_id: int) -> list[dict[str, Any]]:
        """The chain from a patch up to its frame (patches first, the frame last)."""
        try:
            return self.store.lineage(int(patch_id))
        except KeyError as exc:
            raise InputError(f"no patch with id {patch_id} in {self.data}") from exc

    def close(self) -> None:
        """Close the store."""
        self.store.close()

    def __enter__(self) -> "Collection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(data: str | Path) -> Collection:
    """Open a data directory for queries."""
    return Collection(data)
