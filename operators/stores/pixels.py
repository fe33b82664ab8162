"""Backtrace to pixels (DeepLens 5.1): the exact crop of any patch, from the format holding its frame.

A patch's lineage ends at a frame key, and the frame's pixels come from one of two formats:

* ``source``: the file it was read from (DeepLens' *encoded file*, referenced where it was
  ingested from): a video frame is decoded by a seek to the keyframe before it and decoding
  forward (:meth:`~operators.sources.video_file.VideoFileSource.frame`), an image read whole;
* ``frame-file`` / ``segments``: the Kafka message itself, kept by the sink in the ``segments``
  family (``KafkaSource(store_frames="source")``, the default): a JPEG, PNG or raw message is a
  frame file, an H.264 message a GOP-aligned segment, decoded again as the source decoded it.

The patch's box is cut out as the pipeline cut it (:func:`~operators.detectors.patches.crop`),
so the crop is bit-exact with the pipeline's (the decoders are deterministic).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np

from operators.detectors.patches import crop
from operators.kafka import wire
from operators.sources.image_folder import IMAGE_SUFFIXES, read_image
from operators.sources.video_file import VideoFileSource
from operators.stores.lineage_store import LineageStore
from streamvision.core.errors import InputError
from streamvision.core.frames import FrameBatch
from streamvision.core.lineage import FileKey, FrameKeyCodec, KafkaKey

#: The formats that can serve a frame: the file it was read from, a kept Kafka message
#: holding one frame (JPEG, PNG, raw), a kept H.264 segment.
SOURCE, FRAME_FILE, SEGMENTS = "source", "frame-file", "segments"


def source_format(store: LineageStore, frame_key: bytes) -> str | None:
    """The format that can serve this frame's pixels now, or ``None``."""
    key = FrameKeyCodec.decode(frame_key)
    if isinstance(key, FileKey):
        return SOURCE if Path(key.file).is_file() else None
    kept = store.message(key.topic, key.partition, key.offset)
    return None if kept is None else _message_format(kept[1])


def _message_format(headers: list[tuple[str, bytes]]) -> str:
    return SEGMENTS if dict(headers).get(wire.H_KIND) == wire.KIND_H264.encode() else FRAME_FILE


def frame_image(store: LineageStore, frame_key: bytes) -> tuple[np.ndarray, str]:
    """``(RGB pixels, format)`` of a frame.

    Raises:
        InputError: a Kafka frame whose message was not kept, or a file that is gone or unreadable.
    """
    key = FrameKeyCodec.decode(frame_key)
    if isinstance(key, KafkaKey):
        kept = store.message(key.topic, key.partition, key.offset)
        if kept is None:
            raise InputError(f"the pixels of {key.topic}/{key.partition}@{key.offset} are not kept (its source "
                             f"ran with store_frames='none'); the broker may still hold the message")
        value, headers = kept
        images = wire.decode(value, headers).images
        if not 0 <= key.index_in_message < len(images):
            raise InputError(f"message {key.topic}/{key.partition}@{key.offset} has no frame {key.index_in_message}")
        return images[key.index_in_message], _message_format(headers)
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


def load(store: LineageStore, camera_or_file: str, *, time_range: tuple[float, float] | None = None,
         every: int = 1, max_batch: int = 16) -> Iterator[FrameBatch]:
    """The frames of a camera (kept Kafka messages) or of a video file, in time order, as batches.

    ``time_range = (start, end)`` seconds is pushed down: a file is read from a seek to the
    keyframe before ``start`` and stops at ``end``; a camera's messages are found by a range seek
    on their time index (:meth:`~operators.stores.lineage_store.LineageStore.messages_between`),
    so only the messages holding a frame in the range are decoded, and only the frames inside
    it are yielded. ``every`` keeps every N-th frame.

    Raises:
        InputError: neither a readable file nor a camera with kept messages in the range.
    """
    if every < 1:
        raise InputError(f"every must be >= 1, got {every}")
    start, end = time_range if time_range is not None else (0.0, None)
    if Path(camera_or_file).is_file():
        source = VideoFileSource(path=camera_or_file, start=start, end=end, every=every, verify=False)
        try:
            source.open()
            yield from source.read(max_batch)
        finally:
            source.close()
        return
    found = False
    seen = 0
    hi = end if end is not None else float(2 ** 40)
    for topic, partition, offset in store.messages_between(camera_or_file, start, hi):
        kept = store.message(topic, partition, offset)
        if kept is None:
            continue
        found = True
        decoded = wire.decode(*kept)
        inside = [i for i in range(len(decoded)) if start <= decoded.wall_time[i] < hi]
        keep = [i for n, i in enumerate(inside, seen) if n % every == 0]
        seen += len(inside)
        for lo in range(0, len(keep), max_batch):
            rows = keep[lo:lo + max_batch]
            yield FrameBatch(
                keys=[KafkaKey(topic, partition, offset, i).encode() for i in rows],
                cameras=[camera_or_file] * len(rows), frame_no=decoded.frame_no[rows],
                pts=decoded.pts[rows], wall_time=decoded.wall_time[rows], images=decoded.images[rows])
    if not found:
        raise InputError(f"{camera_or_file!r} is neither a video file nor a camera with kept frames "
                         f"in {time_range or 'any time'}")


def patch_pixels(store: LineageStore, patch_id: int) -> dict[str, Any]:
    """The crop of a patch: ``{"image": (h, w, 3) uint8, "format", "frame", "bbox"}``.

    Raises:
        InputError: no such patch, an imported vector (no frame behind it), or the frame's
            pixels are not kept (see :func:`frame_image`).
    """
    try:
        chain = store.lineage(int(patch_id))
    except KeyError as exc:
        raise InputError(f"no patch with id {patch_id}") from exc
    patch = chain[0]
    if not patch.get("frame_key"):
        raise InputError(f"patch {patch_id} is an imported vector: no frame behind it")
    frame_key = bytes.fromhex(patch["frame_key"])
    image, fmt = frame_image(store, frame_key)
    box = np.asarray(patch.get("bbox") or [0, 0, image.shape[1], image.shape[0]], np.float32)
    return {"image": crop(image, box), "format": fmt, "frame": FrameKeyCodec.decode(frame_key).as_dict(),
            "bbox": [float(v) for v in box]}


__all__ = ["FRAME_FILE", "SEGMENTS", "SOURCE", "frame_image", "load", "patch_pixels", "source_format"]
