"""StreamVision: streaming visual data on Ray.

Video frames flow through a dataflow graph of Ray actors (decoders, detectors,
featurizers) into FAISS indexes, with RocksDB keeping the lineage of every result back to
its Kafka offset or file position and frame.

>>> import streamvision
>>> streamvision.Dataflow.__name__
'Dataflow'

The core types (frames, patches, lineage keys, stream types) import nothing else; the
facade names below that need operators or the Ray runtime load on first use, so that
``operators`` can depend on the core types without a cycle.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamvision.errors import ConfigError, GraphValidationError, InputError, MissingAssetError, StreamVisionError
from streamvision.frames import Frame, FrameBatch
from streamvision.lineage import FileKey, KafkaKey, patch_id
from streamvision.patches import Patch, PatchBatch

if TYPE_CHECKING:
    from cluster.runtime import RunReport
    from streamvision.dataflow import Dataflow, Resources
    from streamvision.query import Collection, Match, connect

__version__ = "0.1.0"

_LAZY = {
    "Dataflow": "streamvision.dataflow",
    "Resources": "streamvision.dataflow",
    "Collection": "streamvision.query",
    "Match": "streamvision.query",
    "connect": "streamvision.query",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'streamvision' has no attribute {name!r}")


def run(pipeline: "str | Path | Dataflow", *, address: str | None = None, **kwargs: Any) -> "RunReport":
    """Run a pipeline file or a :class:`Dataflow` on Ray (local unless ``address``)."""
    from streamvision.dataflow import Dataflow

    flow = pipeline if isinstance(pipeline, Dataflow) else Dataflow.from_yaml(pipeline)
    return flow.run(address=address, **kwargs)


__all__ = [
    "Collection", "ConfigError", "Dataflow", "FileKey", "Frame", "FrameBatch", "GraphValidationError",
    "InputError", "KafkaKey", "Match", "MissingAssetError", "Patch", "PatchBatch", "Resources",
    "StreamVisionError", "connect", "patch_id", "run",
]
