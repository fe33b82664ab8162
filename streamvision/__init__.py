"""StreamVision: streaming visual data on Ray.

Video frames flow through a dataflow graph of Ray actors (decoders, detectors,
featurizers) into FAISS indexes, with RocksDB keeping the lineage of every result back to
its Kafka offset or file position and frame.

>>> import streamvision
>>> streamvision.Dataflow.__name__
'Dataflow'

The package is layered (each imports only what is below it): :mod:`streamvision.core`
<- ``operators`` <- :mod:`streamvision.plan` <- ``cluster`` <- :mod:`streamvision.api` /
:mod:`streamvision.cli`; an import-linter contract keeps it so. This module re-exports
the public names of every layer, each imported on first use (PEP 562): importing
``streamvision.core`` (as every actor process does) then costs the core types alone, not
Ray Serve, FastAPI and the query engine of the layers above it.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Each public name and the module that defines it.
_EXPORTS = {
    **dict.fromkeys(
        ["ConfigError", "FileKey", "Frame", "FrameBatch", "GraphValidationError", "InputError", "KafkaKey",
         "MissingAssetError", "Patch", "PatchBatch", "StreamVisionError", "patch_id"], "streamvision.core"),
    **dict.fromkeys(["Dataflow", "Resources"], "streamvision.plan"),
    **dict.fromkeys(["Collection", "Match", "connect", "run"], "streamvision.api"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """The re-exported name ``name``, from its layer (imported now if it was not yet)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'streamvision' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # the next access is a plain lookup
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
