"""The dead-letter topic of a Kafka source: every bad message lands in ``<topic>.dlq`` once.

A dead letter keeps the message's key, value and headers and adds ``sv-error`` (``reason:
message``), ``sv-dlq-topic``, ``sv-dlq-partition``, ``sv-dlq-offset`` and ``sv-dlq-group``
(the consumer group that read it: each pipeline reports its own bad messages).

Exactly once: a source that restarts re-reads the messages after its durable offset, and
would dead-letter the bad ones again. Before its first dead letter on a partition it has
(re)started, :class:`DeadLetters` reads the tail of the dead-letter topic backwards, down to
the first letter of that partition and group below the resume offset, and skips the
offsets found there. That stop is exact because letters are written when a message is
first read, and first reads of a partition happen in offset order (a restarted source only
re-reads offsets that earlier runs already read). The scan reads at most
``max_scan`` letters; beyond that it warns and sends (at-least-once).

*Late* letters, for messages an operator or the sink failed on (``sv-dlq-late: 1``), are
written after their message was read, out of offset order, so the scan counts them but never
stops at them. A late letter's message was first read after every read-time letter of a
lower offset was written, so the stop stays exact.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from operators.kafka import wire
from operators.kafka.settings import KafkaSettings, ensure_topic

log = logging.getLogger(__name__)

H_TOPIC, H_PARTITION, H_OFFSET, H_GROUP = "sv-dlq-topic", "sv-dlq-partition", "sv-dlq-offset", "sv-dlq-group"
H_LATE = "sv-dlq-late"
PartitionKey = tuple[str, int]


def dlq_topic(topic: str) -> str:
    """The dead-letter topic of ``topic``."""
    return f"{topic}.dlq"


class DeadLetters:
    """Sends a source's dead letters, once each (see the module docstring).

    Args:
        settings: the Kafka connection.
        group_id: the source's consumer group.
        max_message_bytes: largest payload a dead letter may carry.
        max_scan: most letters read back when a partition restarts.
    """

    def __init__(self, settings: KafkaSettings, group_id: str, max_message_bytes: int,
                 max_scan: int = 200_000) -> None:
        self.settings = settings
        self.group_id = group_id
        self.max_message_bytes = max_message_bytes
        self.max_scan = max_scan
        self._producer: Any = None
        self._sent: list[Any] = []
        self._ensured: set[str] = set()
        #: offsets already dead-lettered at or after the resume offset, per restarted partition
        self._known: dict[PartitionKey, set[int]] = {}
        self._resume: dict[PartitionKey, int] = {}

    def restart(self, key: PartitionKey, resume: int) -> None:
        """A partition (re)starts at offset ``resume`` (0 from the log start)."""
        self._known.pop(key, None)
        self._resume[key] = resume

    def send(self, record: Any, exc: BaseException, *, late: bool = False) -> bool:
        """Dead-letter ``record`` for ``exc`` unless it already was; ``True`` if sent now.

        ``late``: the message failed after it was read (downstream), possibly on a partition
        this source does not hold: it is looked up from its own offset.
        """
        key = (record.topic, record.partition)
        if late and key not in self._resume:
            known = self._letters_since(record.topic, record.partition, record.offset)
        else:
            if key not in self._known:
                self._known[key] = self._letters_since(record.topic, record.partition, self._resume.get(key, 0))
            known = self._known[key]
        if record.offset in known:
            return False
        known.add(record.offset)
        producer = self._open(record.topic)
        headers = [(k, v) for k, v in (record.headers or []) if not k.startswith("sv-dlq-") and k != wire.H_ERROR]
        headers += [(wire.H_ERROR, wire.error_header(exc)), (H_TOPIC, record.topic.encode()),
                    (H_PARTITION, str(record.partition).encode()), (H_OFFSET, str(record.offset).encode()),
                    (H_GROUP, self.group_id.encode())] + ([(H_LATE, b"1")] if late else [])
        value = record.value or b""
        if len(value) > self.max_message_bytes:  # keep the letter within what the broker takes
            value = value[:self.max_message_bytes]
        self._sent.append(producer.send(dlq_topic(record.topic), key=record.key, value=value, headers=headers))
        return True

    def confirm(self) -> None:
        """Wait until every letter sent is acknowledged (before its offset is reported done).

        Raises:
            KafkaError: a letter was not stored (the source fails and re-reads it).
        """
        if not self._sent:
            return
        self._producer.flush(timeout=60)
        for future in self._sent:
            future.get(timeout=60)
        self._sent.clear()

    def close(self) -> None:
        """Flush and close the producer."""
        if self._producer is not None:
            try:
                self._producer.flush(timeout=30)
            finally:
                self._producer.close()
                self._producer = None

    # ------------------------------------------------------------------ internals
    def _open(self, topic: str) -> Any:
        if dlq_topic(topic) not in self._ensured:
            try:
                ensure_topic(self.settings, dlq_topic(topic), 1)
            except Exception as err:  # noqa: BLE001 - the broker may auto-create it, or forbid admin calls
                log.warning("could not create %s: %s", dlq_topic(topic), err)
            self._ensured.add(dlq_topic(topic))
        if self._producer is None:
            from kafka import KafkaProducer

            self._producer = KafkaProducer(**self.settings.client_config("producer"), acks="all",
                                           max_request_size=self.max_message_bytes + 2 * 1024 * 1024,
                                           max_in_flight_requests_per_connection=1)  # letters stay in order
        return self._producer

    def _letters_since(self, topic: str, partition: int, resume: int) -> set[int]:
        """Offsets >= ``resume`` of ``topic``/``partition`` this group already dead-lettered."""
        from kafka import KafkaConsumer, TopicPartition
        from kafka.errors import KafkaTimeoutError

        dlq = TopicPartition(dlq_topic(topic), 0)
        consumer = KafkaConsumer(**self.settings.client_config("consumer"), enable_auto_commit=False,
                                 max_partition_fetch_bytes=self.max_message_bytes + 4 * 1024 * 1024)
        found: set[int] = set()
        try:
            if dlq.topic not in (consumer.topics() or set()):
                return found
            consumer.assign([dlq])
            start = consumer.beginning_offsets([dlq])[dlq]
            end = consumer.end_offsets([dlq])[dlq]
            scanned, chunk = 0, 500
            while end > start:
                lo = max(start, end - chunk)
                consumer.seek(dlq, lo)
                letters = []
                deadline = time.monotonic() + 60
                while consumer.position(dlq) < end:
                    if time.monotonic() > deadline:
                        raise KafkaTimeoutError(f"reading back {dlq.topic} took over 60 s")
                    for records in consumer.poll(timeout_ms=1000).values():
                        letters.extend(r for r in records if r.offset < end)
                for letter in sorted(letters, key=lambda r: -r.offset):
                    headers = dict(letter.headers or [])
                    if (headers.get(H_TOPIC) != topic.encode() or headers.get(H_PARTITION) != str(partition).encode()
                            or headers.get(H_GROUP, self.group_id.encode()) != self.group_id.encode()):
                        continue
                    offset = int(headers.get(H_OFFSET, b"-1"))
                    if offset >= resume:
                        found.add(offset)
                    elif H_LATE not in headers:
                        return found  # read-time letters are in offset order: the rest are older
                scanned += end - lo
                if scanned >= self.max_scan:
                    log.warning("dead letters of %s/%d: scanned %d letters without reaching offset %d; "
                                "older letters may be sent again", topic, partition, scanned, resume)
                    return found
                end, chunk = lo, min(chunk * 2, 20_000)
            return found
        finally:
            consumer.close()
