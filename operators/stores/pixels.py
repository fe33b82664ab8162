"""Backtrace to pixels (DeepLens 5.1): the exact crop of any patch, from its frame's original.

A patch's lineage ends at a frame key. For frames of a file, the original is the stored
format (DeepLens' *encoded file*, referenced where it was ingested from): a video frame is
decoded by a seek to the keyframe before it and decoding forward
(:meth:`~operators.sources.video_file.VideoFileSource.frame`), an image is read whole, and the
patch's box is cut out as the pipeline cut it (:func:`~operators.detectors.patches.crop`), so
the crop is bit-exact. Frames of Kafka messages are not kept by the store yet: their pixels
are an :class:`~streamvision.core.errors.InputError` that says so.

>>> source_format(FileKey("/nonexistent/v.avi", 3).encode()) is None
True
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from operators.detectors.patches import crop
from operators.sources.image_folder import IMAGE_SUFFIXES, read_image
from operators.sources.video_file import VideoFileSource
from operators.stores.lineage_store import LineageStore
from streamvision.core.errors import InputError
from streamvision.core.lineage import FileKey, FrameKeyCodec

#: The format that serves a frame from the file it was read from.
SOURCE = "source"


def source_format(frame_key: bytes) -> str | None:
    """The format that can serve this frame's pixels now, or ``None``."""
    key = FrameKeyCodec.decode(frame_key)
    return SOURCE if isinstance(key, FileKey) and Path(key.file).is_file() else None


def frame_image(frame_key: bytes) -> tuple[np.ndarray, str]:
    """``(RGB pixels, format)`` of a frame.

    Raises:
        InputError: the frame came from Kafka (not kept), or its file is gone or unreadable.
    """
    key = FrameKeyCodec.decode(frame_key)
    if not isinstance(key, FileKey):
        raise InputError(f"the pixels of {key.as_dict()} are not kept: frames of Kafka input are not "
                         f"stored by this version (the broker may still hold the message)")
    path = Path(key.file)
    if not path.is_file():
        raise InputError(f"the original of this frame, {key.file}, is no longer there (paths are as "
                         f"given at ingest, relative to where it ran)")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return read_image(path), SOURCE
    source = VideoFileSource(path=str(path), verify=False)
    try:
        return source.frame(key.frame_no), SOURCE
    finally:
        source.close()


def patch_pixels(store: LineageStore, patch_id: int) -> dict[str, Any]:
    """The crop of a patch: ``{"image": (h, w, 3) uint8, "format", "frame", "bbox"}``.

    Raises:
        InputError: no such patch, an imported vector (no frame behind it), or the frame's
            pixels are not available (see :func:`frame_image`).
    """
    try:
        chain = store.lineage(int(patch_id))
    except KeyError as exc:
        raise InputError(f"no patch with id {patch_id}") from exc
    patch = chain[0]
    if not patch.get("frame_key"):
        raise InputError(f"patch {patch_id} is an imported vector: no frame behind it")
    frame_key = bytes.fromhex(patch["frame_key"])
    image, fmt = frame_image(frame_key)
    box = np.asarray(patch.get("bbox") or [0, 0, image.shape[1], image.shape[0]], np.float32)
    return {"image": crop(image, box), "format": fmt, "frame": FrameKeyCodec.decode(frame_key).as_dict(),
            "bbox": [float(v) for v in box]}


__all__ = ["SOURCE", "frame_image", "patch_pixels", "source_format"]
