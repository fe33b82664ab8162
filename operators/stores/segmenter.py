"""Compaction of a camera's kept messages into GOP-aligned H.264 segments (DeepLens' segmented file).

A Kafka source with ``store_frames="segments"`` hands on each JPEG, PNG or raw message as it
came, and the writer stores it with the batch's results (so the pixels are durable exactly when
the results are). :class:`Segmenter` then, per camera, gathers the stored messages until they
span ``segment_seconds`` and replaces them by one segment in a single ``WriteBatch``
(:meth:`~operators.stores.lineage_store.LineageStore.replace_kept`): a clip encoded by a fresh
libx264 encoder, so it starts with its own keyframe and a time-range load decodes only the
clips it overlaps. Like an LSM compaction it only rewrites what is stored: a crash before the
``WriteBatch`` leaves the messages, which the next writer picks up again
(:meth:`~operators.stores.lineage_store.LineageStore.kept_since_last_segment`).

The encoding runs on a background thread at the lowest CPU priority (Linux lets a thread have
its own), so queries and ingest go first. Frames of odd size (H.264 4:2:0 wants even ones) or
of mixed sizes stay as the messages they came in.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from typing import Iterable

import numpy as np

from operators.kafka import wire
from operators.producers.segments import encode_h264_segment
from operators.stores.kept import MESSAGE, SEGMENT, KeptEntry, frames_of
from operators.stores.lineage_store import LineageStore

log = logging.getLogger(__name__)

#: Frame rate written into a segment whose frames' rate cannot be told (a single frame).
DEFAULT_RATE = 10.0
_Pending = list[tuple[bytes, float, float]]  # (entry key, first, last capture time)


class Segmenter:
    """Compacts kept messages into segments of ``segment_seconds``, camera by camera, in the background.

    Args:
        store: the collection's store (the writer's).
    """

    def __init__(self, store: LineageStore) -> None:
        self.store = store
        self._pending: dict[str, _Pending] = {}
        self._jobs: queue.Queue[tuple[str, _Pending] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.segments = 0
        self.failed = 0

    def wrote(self, entries: Iterable[KeptEntry]) -> None:
        """Note entries just stored; hand each camera's run that spans its segment length to the
        background thread."""
        fresh = [e for e in entries if e.segment_seconds and e.key[:1] == MESSAGE]
        new = {e.key for e in fresh}
        for camera in {e.camera for e in fresh} - set(self._pending):  # a run an earlier writer left
            self._pending[camera] = [r for r in self.store.kept_since_last_segment(camera) if r[0] not in new]
        for entry in fresh:
            run = self._pending[entry.camera]
            run.append((entry.key, entry.first_ts, entry.last_ts))
            if run[-1][2] - run[0][1] >= entry.segment_seconds:
                self._submit(entry.camera, run)
                self._pending[entry.camera] = []

    def close(self) -> None:
        """Finish the segments handed over, then stop. A run shorter than its segment stays as
        its messages, for the next writer to go on with (:meth:`wrote` picks it up)."""
        self._pending.clear()
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()
            self._thread = None

    def _submit(self, camera: str, run: _Pending) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="segmenter", daemon=True)
            self._thread.start()
        self._jobs.put((camera, list(run)))

    def _work(self) -> None:
        try:  # this thread only (Linux): it runs when nothing else wants the CPU
            os.sched_setscheduler(threading.get_native_id(), os.SCHED_IDLE, os.sched_param(0))
        except (AttributeError, OSError):
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
            except (AttributeError, OSError):
                pass
        while (job := self._jobs.get()) is not None:
            try:
                self.compact(*job)
            except Exception:  # noqa: BLE001 - the messages stay kept as they came; ingest goes on
                self.failed += 1
                log.exception("could not compact %d kept messages of %s into a segment", len(job[1]), job[0])

    def compact(self, camera: str, run: _Pending) -> bool:
        """Replace the stored entries ``run`` of ``camera`` by one segment; ``False`` (and nothing
        changed) when their frames cannot be one H.264 clip."""
        images, keys, times, frame_no, pts = [], [], [], [], []
        for key, _, _ in run:
            kept = self.store.kept(key)
            if kept is None:
                continue
            decoded = wire.decode(*kept)
            frame_keys, _ = frames_of(key, kept[1], len(decoded))
            images.extend(decoded.images)
            keys.extend(frame_keys)
            times.extend(decoded.wall_time.tolist())
            frame_no.extend(decoded.frame_no.tolist())
            pts.extend(decoded.pts.tolist())
        shape = images[0].shape if images else None
        if shape is None or shape[0] % 2 or shape[1] % 2 or any(im.shape != shape for im in images):
            return False
        span = times[-1] - times[0]
        rate = (len(times) - 1) / span if len(times) > 1 and span > 0 else DEFAULT_RATE
        clip = encode_h264_segment(images, rate=rate)
        header = wire.Header(kind=wire.KIND_H264, camera=camera, ts=times[0], frame0=int(frame_no[0]),
                             pts=float(pts[0]), shape=(int(shape[0]), int(shape[1])), count=len(images))
        segment = KeptEntry.of_frames(SEGMENT, camera, keys, times,
                                      [[k, v.decode("latin-1")] for k, v in header.to_kafka()], clip)
        self.store.replace_kept(run, camera, segment, keys)
        self.segments += 1
        return True


__all__ = ["Segmenter"]
