"""The core types: frames, patches, lineage keys, stream types, errors. Imports nothing else of ours."""

from streamvision.core.errors import ConfigError, GraphValidationError, InputError, MissingAssetError, StreamVisionError
from streamvision.core.frames import Frame, FrameBatch
from streamvision.core.lineage import FileKey, KafkaKey, patch_id
from streamvision.core.patches import Patch, PatchBatch

__all__ = [
    "ConfigError", "FileKey", "Frame", "FrameBatch", "GraphValidationError", "InputError", "KafkaKey",
    "MissingAssetError", "Patch", "PatchBatch", "StreamVisionError", "patch_id",
]
