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
the public names of every layer.
"""

from streamvision.core import (
    ConfigError, FileKey, Frame, FrameBatch, GraphValidationError, InputError, KafkaKey, MissingAssetError, Patch,
    PatchBatch, StreamVisionError, patch_id,
)
from streamvision.plan import Dataflow, Resources
from streamvision.api import Collection, Match, connect, run

__version__ = "0.1.0"

__all__ = [
    "Collection", "ConfigError", "Dataflow", "FileKey", "Frame", "FrameBatch", "GraphValidationError",
    "InputError", "KafkaKey", "Match", "MissingAssetError", "Patch", "PatchBatch", "Resources",
    "StreamVisionError", "connect", "patch_id", "run",
]
