"""Frames from a Kafka topic: a consumer-group member that decodes the wire format.

Each replica of this source is one consumer in a group, so replicas split the topic's
partitions (and take them over on rebalance). Messages are decoded by ``sv-kind``
(:mod:`operators.kafka.wire`); every frame is stamped with its lineage key
``KafkaKey(topic, partition, offset, index_in_message)``.

Effectively-once (ARCHITECTURE section 5): every batch carries
``meta["offset_ranges"] = [[topic, partition, first, last, base], ...]`` naming the messages it
completes, and a message split over several batches (a long segment) is named in each part
as ``[topic, partition, first, last, base, part, parts]``; the sink's
:class:`~operators.sinks.offsets.OffsetTracker` turns them into a durable watermark.
``seek()`` resumes each partition from those stored offsets (also when a rebalance hands
this replica a partition), and ``commit()`` copies them to Kafka for lag monitoring.

Bad messages (empty, oversize, unknown ``sv-version``, bad headers, corrupt JPEG, truncated
segment, wrong shape, a record the Kafka client itself cannot parse, or one an operator or the
sink fails on: :mod:`operators.quarantine`) go to ``<topic>.dlq`` once each (:mod:`operators.sources.dead_letters`) with the original key, value and headers
plus an ``sv-error`` header; they are counted (``stats()``, ``meta["dead_letters"]``) and
their offsets reported done once the dead letter is acknowledged, while good messages keep
flowing.

Memory: what one message may decode to, and what a batch may hold, is bounded by
:class:`~operators.limits.DecodeLimits` (``limits=``). Backpressure: the runtime stops pulling
``read()``'s generator while the downstream edge is full; the source yields each batch as
soon as it is complete, so it holds at most one batch and the message being decoded, and
keeps its partitions paused while the runtime waits.

``until_end=True`` (bounded mode) stops once every assigned partition is read up to its
fetch high-water mark (``consumer.highwater``; the embedded broker's ``end_offsets`` is
wrong after multi-record batches).
"""

from __future__ import annotations

import collections
import copy
import logging
import math
import resource
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, NoReturn

import numpy as np

from operators.base import Source
from operators.kafka.settings import KafkaSettings
from operators.kafka import wire
from operators.limits import DEFAULT_LIMITS, DecodeLimits
from operators.sources.dead_letters import DeadLetters
from operators.stores.frame_keeping import FrameKeeper
from operators.stores.kept import KeptEntry
from streamvision.core.errors import ConfigError, InputError
from streamvision.core.frames import FrameBatch
from streamvision.core.lineage import KafkaKey
from streamvision.core.types import FrameType

log = logging.getLogger(__name__)

PartitionKey = tuple[str, int]

#: How long the broker may hold a fetch before answering (``kafka_options`` may override it).
#: kafka-python's default, 500 ms, added 140 ms to the median delivery of frames sent every
#: 100 ms through the embedded broker (p99 274 ms; 10 ms and 60 ms at 100 ms): a frame waits
#: for a fetch already held open. At 50 ms an idle consumer asks 20 times a second.
FETCH_MAX_WAIT_MS = 50


@dataclass
class _Pending:
    """Frames and completed offsets of the batch being built."""

    images: list[np.ndarray] = field(default_factory=list)
    keys: list[bytes] = field(default_factory=list)
    cameras: list[str] = field(default_factory=list)
    frame_no: list[int] = field(default_factory=list)
    pts: list[float] = field(default_factory=list)
    wall_time: list[float] = field(default_factory=list)
    ranges: list[list[Any]] = field(default_factory=list)
    dead_letters: list[list[Any]] = field(default_factory=list)
    kept: list[KeptEntry] = field(default_factory=list)
    pixels: int = 0

    def size(self) -> tuple[int, int] | None:
        return None if not self.images else (int(self.images[0].shape[0]), int(self.images[0].shape[1]))

    def empty(self) -> bool:
        return not self.images and not self.ranges

    def add_range(self, topic: str, partition: int, first: int, last: int, base: int) -> None:
        """Extend the partition's last whole-message range when contiguous, else start one."""
        for entry in reversed(self.ranges):
            if len(entry) == 5 and entry[0] == topic and entry[1] == partition:
                if entry[3] + 1 == first:
                    entry[3] = last
                    return
                break
        self.ranges.append([topic, partition, first, last, base])


class KafkaSource(Source):
    """A consumer-group source of frames from Kafka topics in StreamVision's wire format.

    Args:
        topic: one topic or a list of topics.
        bootstrap_servers: ``host:port[,...]``.
        group_id: the consumer group (replicas of one source share it).
        until_end: stop at the fetch high-water mark of every assigned partition (bounded mode;
            after :meth:`end_with_group`, once every partition is durably done to its end).
        height, width: required frame size; messages of another size are dead letters
            (``None``: any size; a size change starts a new batch).
        dead_letters: send bad messages to ``<topic>.dlq`` (``False``: only count and log them).
        limits: what one message may decode to and a batch may hold
            (:class:`~operators.limits.DecodeLimits`, or a dict of its fields over the defaults).
        store_frames: what the store keeps of each good message's pixels, handed on to the sink
            with the batch (``meta["kept"]``): ``segments`` (the default), ``source``, ``jpeg``,
            ``raw`` or ``none`` (:mod:`operators.stores.frame_keeping`); a store sink's own
            ``store_frames`` is pushed down here by the plan.
        segment_seconds: length of the H.264 segments the writer compacts messages into.
        poll_timeout_ms: how long one poll waits for records.
        idle_yield_s: while the topic is idle, yield an empty batch this often, so that the
            runtime regains control (to stop or drain) instead of waiting in ``next()``.
        idle_end_s: in bounded mode, stop after this long with no partition assigned.
        session_timeout_ms, heartbeat_interval_ms, max_poll_interval_ms: group membership timing.
        kafka_options: kafka-python options passed through (security: ``security_protocol``,
            ``sasl_mechanism``, ``sasl_plain_username``, ``ssl_cafile``, ...).
    """

    name = "kafka"

    def __init__(
        self,
        *,
        topic: str | list[str],
        bootstrap_servers: str | list[str],
        group_id: str = "streamvision",
        until_end: bool = False,
        height: int | None = None,
        width: int | None = None,
        dead_letters: bool = True,
        limits: DecodeLimits | dict[str, int] | None = None,
        store_frames: str = "segments",
        segment_seconds: float = 2.0,
        poll_timeout_ms: int = 200,
        idle_yield_s: float = 1.0,
        idle_end_s: float = 30.0,
        session_timeout_ms: int = 10000,
        heartbeat_interval_ms: int = 3000,
        max_poll_interval_ms: int = 300000,
        kafka_options: dict[str, Any] | None = None,
    ) -> None:
        self.topics = [topic] if isinstance(topic, str) else list(topic)
        if not self.topics or not all(self.topics):
            raise ConfigError("kafka source: give at least one non-empty topic")
        if any(t.endswith(".dlq") for t in self.topics):
            raise ConfigError("kafka source: reading a dead-letter topic (*.dlq) as frames is not supported")
        if (height is None) != (width is None) or (height is not None and (height <= 0 or width <= 0)):  # type: ignore[operator]
            raise ConfigError("kafka source: give both height and width (positive) or neither")
        if not group_id:
            raise ConfigError("kafka source: group_id is empty")
        self.settings = KafkaSettings(bootstrap_servers, dict(kafka_options or {}))
        self.group_id = group_id
        self.until_end = until_end
        self.frame_size = None if height is None else (int(height), int(width))  # type: ignore[arg-type]
        self.dead_letters = dead_letters
        self.keeper = FrameKeeper(store_frames, segment_seconds=segment_seconds)
        if isinstance(limits, dict):
            unknown = set(limits) - set(DecodeLimits.__dataclass_fields__)
            if unknown:
                raise ConfigError(f"kafka source: unknown limits {sorted(unknown)}; "
                                  f"known: {sorted(DecodeLimits.__dataclass_fields__)}")
            limits = DecodeLimits(**{**DEFAULT_LIMITS.__dict__, **limits})
        self.limits = limits or DEFAULT_LIMITS
        self.poll_timeout_ms = poll_timeout_ms
        self.idle_yield_s = idle_yield_s
        self.idle_end_s = idle_end_s
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.max_poll_interval_ms = max_poll_interval_ms
        self._consumer: Any = None
        self._fetcher: Any = None  # reads back the messages rejected downstream
        self._dlq = DeadLetters(self.settings, group_id, self.limits.message_bytes)
        self._stored: dict[PartitionKey, int] = {}
        self._base: dict[PartitionKey, int | None] = {}
        self._next: dict[PartitionKey, int] = {}
        self._paused = False
        self._joining = False
        self._assignment_changed = time.monotonic()
        self._end_with_group = False
        self._group_checked = 0.0
        self._last_size: tuple[int, int] | None = None
        self._counts: collections.Counter[str] = collections.Counter()
        self._reasons: collections.Counter[str] = collections.Counter()

    # ------------------------------------------------------------------ life cycle
    def output_type(self) -> FrameType:
        """Frames of the required size, or of any size."""
        h, w = self.frame_size or (None, None)
        return FrameType(height=h, width=w)

    def open(self) -> None:
        """Create the consumer and subscribe (partitions are assigned on the first poll)."""
        from kafka import ConsumerRebalanceListener, KafkaConsumer

        source = self

        class _Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked: Any) -> None:
                source._on_revoked(revoked)

            def on_partitions_assigned(self, assigned: Any) -> None:
                source._on_assigned(assigned)

        fetch = self.limits.message_bytes + 1024 * 1024
        self._consumer = KafkaConsumer(
            **{"fetch_max_wait_ms": FETCH_MAX_WAIT_MS, **self.settings.client_config("consumer")},
            # every partition is positioned explicitly (stored offset or log start); an offset out of
            # range is an error, not a silent jump (see _poll)
            group_id=self.group_id, enable_auto_commit=False, auto_offset_reset="none",
            session_timeout_ms=self.session_timeout_ms, heartbeat_interval_ms=self.heartbeat_interval_ms,
            max_poll_interval_ms=self.max_poll_interval_ms,
            max_partition_fetch_bytes=fetch, fetch_max_bytes=max(fetch, 50 * 1024 * 1024),
        )
        self._consumer.subscribe(self.topics, listener=_Listener())

    def seek(self, offsets: dict[tuple[str, int], int]) -> None:
        """Resume from the sink's durable ``(topic, partition) -> next offset``."""
        self._stored.update({(str(t), int(p)): int(o) for (t, p), o in offsets.items() if t in self.topics})
        if self._consumer is not None:
            for tp in self._consumer.assignment():
                self._start_partition(tp)

    def end_with_group(self) -> None:
        """In bounded mode, end only once the whole group's input is durably done: every
        partition of the topics has a durable offset (:meth:`commit`) at its end, not only the
        partitions this member holds.

        For replicas whose sinks report durable offsets. Without it, a replica that has read
        its own partitions ends, and stops polling; if another replica then dies (its node
        lost), the group can hand the dead one's partitions to no one who is reading, and the
        run ends without them.
        """
        self._end_with_group = True

    def join(self, replicas: int) -> None:
        """Read nothing until this member holds at most its share of the partitions
        (``ceil(partitions / replicas)``), for at most a session timeout.

        Brokers delay a new group's first rebalance (``group.initial.rebalance.delay.ms``, 3 s)
        so that members starting together share it; a replica that starts later (a busy node, a
        restart) finds every partition handed to the first, which would read a bounded topic's
        whole backlog alone without this wait.
        """
        if replicas <= 1:
            return
        if self._consumer is None:
            self.open()
        consumer = self._consumer
        deadline = time.monotonic() + self.session_timeout_ms / 1000
        self._joining = True
        try:
            consumer.pause(*consumer.assignment())
            while time.monotonic() < deadline:
                for tp, records in consumer.poll(timeout_ms=self.poll_timeout_ms).items():
                    consumer.seek(tp, records[0].offset)  # paused partitions fetch nothing; never drop a record
                total = sum(len(consumer.partitions_for_topic(t) or ()) for t in self.topics)
                assigned = len(consumer.assignment())
                if total and assigned <= math.ceil(total / replicas) and (assigned or total < replicas):
                    log.info("kafka source %s: joined with %d of %d partitions", self.group_id, assigned, total)
                    return
            log.warning("kafka source %s: the group did not spread its partitions over %d replicas within "
                        "%.0f s; reading what this replica holds", self.group_id, replicas,
                        self.session_timeout_ms / 1000)
        finally:
            self._joining = False
            self._paused = bool(consumer.assignment())  # read() resumes them

    def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        """Record durable offsets (used on rebalance) and commit ours to Kafka for lag monitoring."""
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        for key, offset in offsets.items():
            key = (str(key[0]), int(key[1]))
            self._stored[key] = max(self._stored.get(key, 0), int(offset))
        if self._consumer is None:
            return
        assigned = self._consumer.assignment()
        mine = {TopicPartition(t, p): OffsetAndMetadata(int(o), "", -1)
                for (t, p), o in offsets.items() if TopicPartition(t, p) in assigned}
        if mine:
            self._consumer.commit_async(mine)

    def with_frame_storage(self, store_frames: str, segment_seconds: float) -> "KafkaSource":
        """A copy of this (unopened) source keeping pixels as ``store_frames`` says (the plan
        pushes a store sink's choice down here, where the frames are decoded).

        Raises:
            ConfigError: an unknown format or a segment length that is not positive.
        """
        source = copy.copy(self)
        source.keeper = FrameKeeper(store_frames, segment_seconds=segment_seconds)
        return source

    def reject(self, messages: list[list[Any]]) -> FrameBatch:
        """Dead-letter messages an operator or the sink failed on (``processing-failed``, with
        their original key, value and headers read back from the topic); once the letters are
        acknowledged, return the empty batch that completes their offsets."""
        pending = _Pending()
        for topic, partition, offset, reason, ranges in messages:
            if topic not in self.topics:
                continue
            record = self._fetch(str(topic), int(partition), int(offset))
            self._dead_letter(record, wire.ProcessingFailed(str(reason)), pending, late=True)
            pending.ranges.extend(list(r) for r in ranges)
        self._dlq.confirm()
        return self._finish(pending)

    def close(self) -> None:
        """Flush dead letters and leave the group."""
        try:
            self._dlq.close()
        finally:
            if self._fetcher is not None:
                self._fetcher.close()
                self._fetcher = None
            if self._consumer is not None:
                self._consumer.close(autocommit=False)
                self._consumer = None

    def stats(self) -> dict[str, int]:
        """Flat counters (the runtime sums them over replicas): ``messages``, ``frames``,
        ``dead_letters``, ``dead_letters.<reason>``, ``dead_letters_already_sent`` (bad messages
        read again whose letter a previous run sent), ``replicas_with_input`` (1 if this replica
        read anything) and ``max_rss_mb`` (peak memory of the process running it)."""
        counts = {"messages": 0, "frames": 0, "dead_letters": 0, **self._counts}
        counts.update({f"dead_letters.{reason}": n for reason, n in self._reasons.items()})
        counts["replicas_with_input"] = int(counts["messages"] > 0)
        counts["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # the process's peak
        return counts

    # ------------------------------------------------------------------ rebalance
    def _start_partition(self, tp: Any) -> None:
        key = (tp.topic, tp.partition)
        stored = self._stored.get(key)
        if stored is not None:
            self._consumer.seek(tp, stored)
        else:
            self._consumer.seek_to_beginning(tp)
        # Offsets before ``base`` are durably done; ``None`` until the first record shows the log start.
        self._base[key] = stored
        self._dlq.restart(key, stored or 0)  # from the log start: every letter of it may exist
        if stored is not None:
            self._next[key] = stored
        else:
            self._next.pop(key, None)

    def _on_assigned(self, assigned: Any) -> None:
        log.info("kafka source %s: assigned %s", self.group_id, sorted((t.topic, t.partition) for t in assigned))
        self._assignment_changed = time.monotonic()
        self._paused = False
        for tp in assigned:
            self._start_partition(tp)
        if self._joining and assigned:
            self._consumer.pause(*assigned)

    def _on_revoked(self, revoked: Any) -> None:
        # Nothing decoded is buffered here: read() polls only once its batches are all yielded.
        for tp in revoked:
            self._base.pop((tp.topic, tp.partition), None)
            self._next.pop((tp.topic, tp.partition), None)

    # ------------------------------------------------------------------ reading
    def read(self, max_batch: int) -> Iterator[FrameBatch]:
        """Yield frame batches of at most ``max_batch`` frames until stopped (or the end, if bounded)."""
        if max_batch < 1:
            raise ConfigError(f"max_batch must be >= 1, got {max_batch}")
        if self._consumer is None:
            self.open()
        consumer = self._consumer
        ready: collections.deque[FrameBatch] = collections.deque()
        idle_since = last_yield = time.monotonic()
        while True:
            if self._paused:
                consumer.resume(*consumer.assignment())
                self._paused = False
            records = self._poll(max_batch, ready)
            pending = _Pending()
            for tp in sorted(records, key=lambda t: (t.topic, t.partition)):
                if tp not in consumer.assignment():
                    continue
                for record in records[tp]:
                    pending = self._take(record, pending, ready, max_batch)
                    if ready:  # a full batch: hand it on before decoding more
                        yield from self._hand_on(ready)
                        last_yield = time.monotonic()
            if not pending.empty() or (not ready and time.monotonic() - last_yield >= self.idle_yield_s):
                ready.append(self._finish(pending))
            if ready:
                yield from self._hand_on(ready)
                last_yield = time.monotonic()
            if consumer.assignment():
                idle_since = time.monotonic()
            if self.until_end and not records and self._at_end(idle_since):
                return

    def _hand_on(self, ready: collections.deque[FrameBatch]) -> Iterator[FrameBatch]:
        """Yield the ready batches (their dead letters acknowledged first); partitions stay paused
        while the runtime holds the generator."""
        consumer = self._consumer
        self._dlq.confirm()
        while ready:
            batch = ready.popleft()
            if ready and not self._paused and consumer.assignment():
                consumer.pause(*consumer.assignment())
                self._paused = True
            yield batch

    def _poll(self, max_batch: int, ready: collections.deque[FrameBatch]) -> dict[Any, list[Any]]:
        """Poll; a resume offset outside the log is an :class:`InputError`, never a silent jump; a
        record the client cannot parse is dead-lettered (its offset reported done in ``ready``)."""
        from kafka.errors import CorruptRecordError, OffsetOutOfRangeError

        consumer = self._consumer
        try:
            records = consumer.poll(timeout_ms=self.poll_timeout_ms, max_records=max_batch)
        except OffsetOutOfRangeError as exc:
            self._out_of_range(dict(exc.args[0]))
        except (CorruptRecordError, UnicodeDecodeError) as exc:
            self._skip_unparsable(exc, ready)
            return {}
        if not records:  # the embedded broker answers an offset past the end with an empty fetch
            beyond = {}
            for tp in consumer.assignment():
                high = consumer.highwater(tp)
                if high is not None and consumer.position(tp) > high:
                    beyond[tp] = consumer.position(tp)
            if beyond:
                self._out_of_range(beyond)
        return records

    def _skip_unparsable(self, exc: BaseException, ready: collections.deque[FrameBatch]) -> None:
        """Dead-letter the record the client cannot parse (its payload unknown) and step over it.

        The client does not say which partition failed: it is the one partition with records
        left to read (kafka-python cannot be polled again safely to find out). A record batch
        is parsed whole, so each record after the bad one in its producer batch fails the same
        way and is dead-lettered in turn.
        """
        consumer = self._consumer
        waiting = [tp for tp in consumer.assignment()
                   if consumer.highwater(tp) is None or consumer.position(tp) < consumer.highwater(tp)]
        if len(waiting) != 1:
            raise InputError(f"kafka source: the client cannot parse a record ({exc}) and {len(waiting)} "
                             f"partitions could hold it; read this topic with one partition per source "
                             f"replica to dead-letter it") from exc
        tp = waiting[0]
        record = _Unparsable(tp.topic, tp.partition, consumer.position(tp))
        pending = _Pending()
        first, base = self._advance(record)
        self._dead_letter(record, wire.UnparsableRecord(f"the Kafka client cannot parse it: {exc}"), pending)
        pending.add_range(record.topic, record.partition, first, record.offset, base)
        consumer.seek(tp, record.offset + 1)  # the seek also drops the client's failed fetch
        ready.append(self._finish(pending))

    @staticmethod
    def _out_of_range(offsets: dict[Any, int]) -> NoReturn:
        where = ", ".join(f"{tp.topic}/{tp.partition}@{off}" for tp, off in offsets.items())
        raise InputError(
            f"kafka source: resume offset(s) {where} are outside the topic's log. The topic was "
            f"recreated (the embedded broker forgets topics when it restarts) or retention deleted "
            f"unread messages; ingest into a fresh data directory"
        )

    def _at_end(self, idle_since: float) -> bool:
        """Every assigned partition is read to its end, and the assignment is settled: a member
        that died keeps its partitions until its session expires, so the end waits for a session
        timeout after the last rebalance (which then hands those partitions over)."""
        if time.monotonic() - self._assignment_changed < self.session_timeout_ms / 1000 + 2.0:
            return False
        consumer = self._consumer
        assigned = consumer.assignment()
        if not assigned and not self._end_with_group:
            return time.monotonic() - idle_since > self.idle_end_s
        for tp in assigned:
            high = consumer.highwater(tp)
            if high is None or consumer.position(tp) < high:
                return False
        return not self._end_with_group or self._group_durable()

    def _group_durable(self) -> bool:
        """Every partition of the topics durably done to its end offset (checked once a second:
        it asks the broker). An empty partition, or one whose log start has passed every
        message, is done without a durable offset."""
        now = time.monotonic()
        if now - self._group_checked < 1.0:
            return False
        self._group_checked = now
        from kafka import TopicPartition

        consumer = self._consumer
        partitions = [TopicPartition(t, p) for t in self.topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        ends, starts = consumer.end_offsets(partitions), consumer.beginning_offsets(partitions)
        return all(self._stored.get((tp.topic, tp.partition), starts[tp]) >= ends[tp] for tp in partitions)

    def _take(self, record: Any, pending: _Pending, ready: collections.deque[FrameBatch],
              max_batch: int) -> _Pending:
        """Decode one record into ``pending``; move full batches to ``ready``; return the open batch."""
        first, base = self._advance(record)
        try:
            decoded = wire.decode(record.value, record.headers, limits=self.limits)
            size = (int(decoded.images.shape[1]), int(decoded.images.shape[2]))
            if self.frame_size is not None and size != self.frame_size:
                raise wire.WrongShape(f"frames are {size[0]}x{size[1]}, this source requires "
                                      f"{self.frame_size[0]}x{self.frame_size[1]}")
        except Exception as exc:  # untrusted input: any decoder failure is a dead letter
            self._dead_letter(record, exc, pending)
            pending.add_range(record.topic, record.partition, first, record.offset, base)
            return pending
        n = len(decoded)
        self._counts["frames"] += n
        pixels = n * size[0] * size[1]
        if pending.images and (pending.size() != size or len(pending.images) + n > max_batch
                               or pending.pixels + pixels > self.limits.batch_pixels):
            ready.append(self._finish(pending))
            pending = _Pending()
        parts = max(1, -(-n // max_batch))
        pending.kept.extend(self.keeper.entries(record, decoded))
        for part in range(parts):
            lo, hi = part * max_batch, min(n, (part + 1) * max_batch)
            for i in range(lo, hi):
                pending.images.append(decoded.images[i])
                pending.keys.append(KafkaKey(record.topic, record.partition, record.offset, i).encode())
                pending.cameras.append(decoded.header.camera)
                pending.frame_no.append(int(decoded.frame_no[i]))
                pending.pts.append(float(decoded.pts[i]))
                pending.wall_time.append(float(decoded.wall_time[i]))
                pending.pixels += size[0] * size[1]
            if parts == 1:
                pending.add_range(record.topic, record.partition, first, record.offset, base)
            else:
                pending.ranges.append([record.topic, record.partition, first, record.offset, base, part, parts])
                ready.append(self._finish(pending))
                pending = _Pending()
        return pending

    def _advance(self, record: Any) -> tuple[int, int]:
        """Count a record read; ``(first, base)`` of the offset range it completes."""
        key = (record.topic, record.partition)
        if self._base.get(key) is None:
            self._base[key] = record.offset  # read from the log start: nothing before it exists
        first = min(self._next.get(key, record.offset), record.offset)  # cover offset gaps
        self._next[key] = record.offset + 1
        self._counts["messages"] += 1
        return first, self._base[key]  # type: ignore[return-value]

    def _finish(self, pending: _Pending) -> FrameBatch:
        size = pending.size() or self._last_size or self.frame_size or (0, 0)
        self._last_size = size
        meta: dict[str, object] = {"offset_ranges": pending.ranges}
        if pending.dead_letters:
            meta["dead_letters"] = pending.dead_letters
        if pending.kept:
            meta["kept"] = pending.kept
        images = np.stack(pending.images) if pending.images else np.zeros((0, *size, 3), np.uint8)
        return FrameBatch(
            keys=pending.keys, cameras=pending.cameras,
            frame_no=np.asarray(pending.frame_no, np.int64), pts=np.asarray(pending.pts, np.float64),
            wall_time=np.asarray(pending.wall_time, np.float64), images=images, meta=meta,
        )

    # ------------------------------------------------------------------ dead letters
    def _fetch(self, topic: str, partition: int, offset: int) -> Any:
        """The record at ``offset``, or its coordinates alone if it is gone or unparsable."""
        from kafka import KafkaConsumer, TopicPartition

        if self._fetcher is None:
            fetch = self.limits.message_bytes + 1024 * 1024
            self._fetcher = KafkaConsumer(**self.settings.client_config("consumer"), enable_auto_commit=False,
                                          max_partition_fetch_bytes=fetch, fetch_max_bytes=max(fetch, 50 * 1024 * 1024))
        tp = TopicPartition(topic, partition)
        self._fetcher.assign([tp])
        self._fetcher.seek(tp, offset)
        deadline = time.monotonic() + 10.0
        try:
            while time.monotonic() < deadline:
                for records in self._fetcher.poll(timeout_ms=500, max_records=1).values():
                    for record in records:
                        if record.offset >= offset:
                            return record if record.offset == offset else _Unparsable(topic, partition, offset)
        except Exception as exc:  # noqa: BLE001 - the record may be one the client cannot parse
            log.warning("kafka source: cannot read back %s/%d@%d: %s", topic, partition, offset, exc)
        return _Unparsable(topic, partition, offset)

    def _dead_letter(self, record: Any, exc: BaseException, pending: _Pending, *, late: bool = False) -> None:
        reason = wire.error_header(exc)
        self._counts["dead_letters"] += 1
        self._reasons[wire.error_reason(reason)] += 1
        log.warning("kafka source: %s/%d@%d is a dead letter: %s", record.topic, record.partition,
                    record.offset, reason.decode(errors="replace"))
        pending.dead_letters.append([record.topic, record.partition, record.offset, wire.error_reason(reason)])
        if self.dead_letters and not self._dlq.send(record, exc, late=late):
            self._counts["dead_letters_already_sent"] += 1


@dataclass(frozen=True)
class _Unparsable:
    """The coordinates of a record the Kafka client could not parse (its bytes unknown)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value: bytes = b""
    headers: tuple[tuple[str, bytes], ...] = ()
