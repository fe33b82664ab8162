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

_Run = list[tuple[bytes, float, float]]  # (entry key, first, last capture time)


class Segmenter:
    """Compacts kept messages into segments of ``segment_seconds``, camera by camera, in the background.

    Args:
        store: the collection's store (the writer's).
    """

    def __init__(self, store: LineageStore) -> None:
        self.store = store
        self._pending: dict[str, dict[bytes, tuple[float, float]]] = {}  # camera -> its run, by entry key
        self._jobs: queue.Queue[tuple[str, _Run] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._queued = 0  # runs handed to the thread and not done yet
        self._handed_over: set[bytes] = set()  # their entries' keys
        self._lock = threading.Lock()
        #: Held while a segment replaces its messages. A writer holds it from checking which of a
        #: batch's messages segments hold already (:meth:`LineageStore.not_in_segments`) until
        #: it has stored the others, so that no message comes back beside the segment holding it.
        self.replacing = threading.Lock()
        self.encoder = ClipEncoder()
        self.segments = 0
        self.failed = 0

    @property
    def queued(self) -> int:
        """Runs handed to the background thread and not yet compacted (or given up)."""
        return self._queued

    def wrote(self, entries: Iterable[KeptEntry]) -> None:
        """Note entries just stored; hand each camera's run that spans its segment length to the
        background thread. A camera's first entries pick up the run an earlier writer left,
        cut into runs of the segment length too (a long one would be decoded whole). An entry
        a run holds already, pending or handed over (a replayed batch), is not added again."""
        fresh = [e for e in entries if e.segment_seconds and e.key[:1] == MESSAGE]
        new = {e.key for e in fresh}
        for entry in fresh:
            if entry.camera not in self._pending:
                self._pending[entry.camera] = {}
                for left in self.store.kept_since_last_segment(entry.camera):
                    if left[0] not in new:
                        self._add(entry.camera, left, entry.segment_seconds)
            self._add(entry.camera, (entry.key, entry.first_ts, entry.last_ts), entry.segment_seconds)

    def wait(self) -> None:
        """Wait until every run handed over is compacted (or given up)."""
        if self._thread is not None:
            self._jobs.join()

    def close(self, *, finish: bool = True) -> None:
        """Stop. ``finish``: compact the runs handed over first; otherwise only the one in
        progress, and the rest stay as their messages, as a RocksDB close leaves pending
        compactions (the next writer goes on with them). A run shorter than its segment always
        stays as its messages, for the next writer to go on with (:meth:`wrote` picks it up)."""
        self._pending.clear()
        if self._thread is not None:
            while not finish:
                try:
                    _, run = self._jobs.get_nowait()  # type: ignore[misc]
                except queue.Empty:
                    break
                self._done(run)
            self._jobs.put(None)
            self._thread.join()
            self._thread = None
        self.encoder.close()

    def _add(self, camera: str, entry: tuple[bytes, float, float], segment_seconds: float) -> None:
        run = self._pending[camera]
        key, first, last = entry
        if key in run or key in self._handed_over:
            return
        run[key] = (first, last)
        if last - next(iter(run.values()))[0] >= segment_seconds:
            self._submit(camera, [(k, f, t) for k, (f, t) in run.items()])
            self._pending[camera] = {}

    def _submit(self, camera: str, run: _Run) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="segmenter", daemon=True)
            self._thread.start()
        with self._lock:
            self._queued += 1
            self._handed_over.update(key for key, _, _ in run)
        self._jobs.put((camera, run))

    def _done(self, run: _Run) -> None:
        with self._lock:
            self._queued -= 1
            self._handed_over.difference_update(key for key, _, _ in run)
        self._jobs.task_done()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                self.compact(*job)
            except Exception:  # noqa: BLE001 - the messages stay kept as they came; ingest goes on
                self.failed += 1
                log.exception("could not compact %d kept messages of %s into a segment", len(job[1]), job[0])
            finally:
                self._done(job[1])
        self._jobs.task_done()

    def compact(self, camera: str, run: _Run) -> bool:
        """Replace the stored entries ``run`` of ``camera`` by one segment, its frames in capture
        time order (they may have come out of order); ``False`` (and nothing changed) when their
        frames cannot be one H.264 clip."""
        in_time_order = sorted(run, key=lambda entry: entry[1:])
        messages = [(key, *kept) for key, _, _ in in_time_order if (kept := self.store.kept(key)) is not None]
        clip = self.encoder.encode(messages) if messages else None
        if clip is None:
            return False
        header = wire.Header(kind=wire.KIND_H264, camera=camera, ts=clip.times[0], frame0=clip.frame0,
                             pts=clip.pts0, shape=clip.shape, count=len(clip.frame_keys))
        segment = KeptEntry.of_frames(SEGMENT, camera, clip.frame_keys, clip.times,
                                      [[k, v.decode("latin-1")] for k, v in header.to_kafka()], clip.data)
        with self.replacing:
            self.store.replace_kept(run, camera, segment, clip.frame_keys)
        self.segments += 1
        return True


__all__ = ["Segmenter"]
