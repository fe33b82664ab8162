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

A background thread reads each run back and writes its segment; the decoding and encoding run
in a process of their own at the lowest CPU priority
(:class:`~operators.stores.clip_encoder.ClipEncoder`), so queries and ingest go first. Not on
a thread of the writer's process at that priority: holding the writer's GIL while the CPUs are
busy elsewhere, such a thread stalled the writer (1.5 s seen on 2 cores), and every batch
behind it. Frames of odd size (H.264 4:2:0 wants even ones) or of mixed sizes
stay as the messages they came in.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Iterable

from operators.kafka import wire
from operators.stores.clip_encoder import ClipEncoder
from operators.stores.kept import MESSAGE, SEGMENT, KeptEntry
from operators.stores.lineage_store import LineageStore

log = logging.getLogger(__name__)

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
        self.encoder = ClipEncoder()
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
        self.encoder.close()

    def _submit(self, camera: str, run: _Pending) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="segmenter", daemon=True)
            self._thread.start()
        self._jobs.put((camera, list(run)))

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                self.compact(*job)
            except Exception:  # noqa: BLE001 - the messages stay kept as they came; ingest goes on
                self.failed += 1
                log.exception("could not compact %d kept messages of %s into a segment", len(job[1]), job[0])

    def compact(self, camera: str, run: _Pending) -> bool:
        """Replace the stored entries ``run`` of ``camera`` by one segment; ``False`` (and nothing
        changed) when their frames cannot be one H.264 clip."""
        messages = [(key, *kept) for key, _, _ in run if (kept := self.store.kept(key)) is not None]
        clip = self.encoder.encode(messages) if messages else None
        if clip is None:
            return False
        header = wire.Header(kind=wire.KIND_H264, camera=camera, ts=clip.times[0], frame0=clip.frame0,
                             pts=clip.pts0, shape=clip.shape, count=len(clip.frame_keys))
        segment = KeptEntry.of_frames(SEGMENT, camera, clip.frame_keys, clip.times,
                                      [[k, v.decode("latin-1")] for k, v in header.to_kafka()], clip.data)
        self.store.replace_kept(run, camera, segment, clip.frame_keys)
        self.segments += 1
        return True


__all__ = ["Segmenter"]
