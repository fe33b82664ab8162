"""Backtrace to pixels (DeepLens 5.1): the exact crop of any patch, from the format holding its frame.

A patch's lineage ends at a frame key, and the frame's pixels come from one of three formats:

* ``source``: the file it was read from (DeepLens' *encoded file*, referenced where it was
  ingested from): a video frame is decoded by a seek to the keyframe before it and decoding
  forward (:meth:`~operators.sources.video_file.VideoFileSource.frame`), an image read whole;
* ``frame-file``: a kept JPEG, PNG or raw Kafka message, or a frame the source re-encoded
  (``store_frames="jpeg"`` / ``"raw"``);
* ``segments``: a kept H.264 message, or a segment the writer compacted a camera's messages
  into (``store_frames="segments"``, the default; :mod:`operators.stores.segmenter`).

Kept pixels are entries of the ``segments`` family (:mod:`operators.stores.kept`), decoded
again as the source decoded them; the patch's box is cut out as the pipeline cut it
(:func:`~operators.detectors.patches.crop`), so the crop is bit-exact with the pipeline's
wherever the format is the message as it came or lossless (the decoders are deterministic),
and within the codec's error where it was re-encoded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np

from operators.detectors.patches import crop
from operators.kafka import wire
from operators.sources.image_folder import IMAGE_SUFFIXES, read_image
from operators.sources.video_file import VideoFileSource
from operators.stores import kept
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
    held = store.kept_frame(frame_key)
    return None if held is None else _entry_format(held[0], store.kept(held[0]))


def _entry_format(key: bytes, entry: tuple[bytes, list[tuple[str, bytes]]] | None) -> str | None:
    if entry is None:
        return None
    if key[:1] == kept.SEGMENT or dict(entry[1]).get(wire.H_KIND) == wire.KIND_H264.encode():
        return SEGMENTS
    return FRAME_FILE


def _decode_entry(store: LineageStore, key: bytes) -> tuple[wire.Decoded, list[bytes]] | None:
    """The frames of a kept entry (times as captured) and their frame keys, or ``None``."""
    entry = store.kept(key)
    if entry is None:
        return None
    decoded = wire.decode(*entry)
    frame_keys, times = kept.frames_of(key, entry[1], len(decoded))
    if times is not None:
        decoded.wall_time[:] = times
    return decoded, frame_keys


def frame_image(store: LineageStore, frame_key: bytes) -> tuple[np.ndarray, str]:
    """``(RGB pixels, format)`` of a frame.

    Raises:
        InputError: a Kafka frame whose pixels were not kept, or a file that is gone or unreadable.
    """
    key = FrameKeyCodec.decode(frame_key)
    if isinstance(key, KafkaKey):
        held = store.kept_frame(frame_key)
        found = None if held is None else _decode_entry(store, held[0])
        if held is None or found is None:
            raise InputError(f"the pixels of {key.topic}/{key.partition}@{key.offset} are not kept (its sink "
                             f"ran with store_frames='none'); the broker may still hold the message")
        decoded, _ = found
        if not 0 <= held[1] < len(decoded):
            raise InputError(f"message {key.topic}/{key.partition}@{key.offset} has no frame {key.index_in_message}")
        return decoded.images[held[1]], _entry_format(held[0], store.kept(held[0])) or FRAME_FILE
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
    """The frames of a camera (its kept pixels) or of a video file, in time order, as batches
    (a camera's frames entry by entry: where entries overlap, late frames come with their own).

    ``time_range = (start, end)`` seconds is pushed down: a file is read from a seek to the
    keyframe before ``start`` and stops at ``end``; a camera's kept entries (messages, frames,
    segments) are found by a range seek on their time index
    (:meth:`~operators.stores.lineage_store.LineageStore.kept_between`), so only the entries
    holding a frame in the range are decoded, and only the frames inside it are yielded.
    ``every`` keeps every N-th frame.

    Raises:
        InputError: neither a readable file nor a camera with kept frames in the range.
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
    for key, _, _ in store.kept_between(camera_or_file, start, hi):
        entry = _decode_entry(store, key)
        if entry is None:
            continue
        found = True
        decoded, frame_keys = entry
        inside = [i for i in range(len(decoded)) if start <= decoded.wall_time[i] < hi]
        keep = [i for n, i in enumerate(inside, seen) if n % every == 0]
        seen += len(inside)
        for lo in range(0, len(keep), max_batch):
            rows = keep[lo:lo + max_batch]
            yield FrameBatch(
                keys=[frame_keys[i] for i in rows], cameras=[camera_or_file] * len(rows),
                frame_no=decoded.frame_no[rows], pts=decoded.pts[rows], wall_time=decoded.wall_time[rows],
                images=decoded.images[rows])
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
