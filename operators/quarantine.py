"""Setting aside the source messages an operator or a sink fails on.

A batch holds the frames (or patches) of several Kafka messages. When an operator or a sink
raises on a batch, the runtime hands it to :class:`Isolator`, which runs it again one message
at a time: the messages that pass go on, and each message that fails again is *rejected*.
Its offsets leave the batch's ``offset_ranges`` (so the sink does not mark it done) and it is
listed in ``meta["rejected"]`` as ``[topic, partition, offset, reason, ranges]``, ``ranges``
being the offset range entries that complete it. The sink's ack carries the list to the
driver, which passes it to the source: the source dead-letters each message (reason
``processing-failed``) and, once the letter is acknowledged, emits an empty batch with those
ranges, so the message is done exactly when its letter is stored (ARCHITECTURE section 5).

A failure that is not about one message is not isolated: configuration errors, frames that
are not from Kafka (a file source has no dead-letter topic), and an operator that fails on
``give_up_after`` messages in a row (a broken model, not bad input) raise the error instead
of dead-lettering the stream.

>>> kept, taken = split_ranges([["t", 0, 3, 7, 0]], {("t", 0, 5)})
>>> kept, taken
([['t', 0, 3, 4, 0], ['t', 0, 6, 7, 0]], {('t', 0, 5): [['t', 0, 5, 5, 0]]})
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, Callable, Sequence, TypeVar

from streamvision.core.errors import ConfigError
from streamvision.core.frames import FrameBatch
from streamvision.core.lineage import FrameKeyCodec, KafkaKey
from streamvision.core.patches import PatchBatch

log = logging.getLogger(__name__)

MessageId = tuple[str, int, int]  # topic, partition, offset
Batch = TypeVar("Batch", FrameBatch, PatchBatch)
Out = TypeVar("Out")
_MAX_REASON = 500


def message_rows(batch: FrameBatch | PatchBatch) -> dict[MessageId, list[int]] | None:
    """The rows of each Kafka message in ``batch``, in order; ``None`` if a row is not from Kafka."""
    keys = batch.keys if isinstance(batch, FrameBatch) else batch.frame_keys
    rows: dict[MessageId, list[int]] = {}
    for i, raw in enumerate(keys):
        key = FrameKeyCodec.decode(raw)
        if not isinstance(key, KafkaKey):
            return None
        rows.setdefault((key.topic, key.partition, key.offset), []).append(i)
    return rows


def split_ranges(ranges: Sequence[Sequence[Any]], messages: set[MessageId]
                 ) -> tuple[list[list[Any]], dict[MessageId, list[list[Any]]]]:
    """Offset range entries without ``messages``, and the entries that complete each of them.

    A whole-message range ``[topic, partition, first, last, base]`` is cut around each taken
    offset; a part of a split message (7 fields, naming the message as ``last``) moves whole.
    """
    kept: list[list[Any]] = []
    taken: dict[MessageId, list[list[Any]]] = {m: [] for m in messages}
    for entry in ranges:
        topic, partition, first, last, base = entry[:5]
        if len(entry) == 7:
            message = (str(topic), int(partition), int(last))
            (taken[message] if message in taken else kept).append(list(entry))
            continue
        start = int(first)
        for offset in sorted(o for t, p, o in messages if (t, p) == (topic, partition) and first <= o <= last):
            if start < offset:
                kept.append([topic, partition, start, offset - 1, base])
            taken[(str(topic), int(partition), offset)].append([topic, partition, offset, offset, base])
            start = offset + 1
        if start <= int(last):
            kept.append([topic, partition, start, int(last), base])
    return kept, taken


class Isolator:
    """Runs a failed batch again one message at a time (see the module docstring).

    Args:
        node: the graph node it serves (named in each rejection's reason).
        fatal: errors never isolated besides :class:`ConfigError` (e.g. a dead actor).
        give_up_after: consecutive failing messages after which the error is raised.
    """

    def __init__(self, node: str, *, fatal: Callable[[BaseException], bool] = lambda exc: False,
                 give_up_after: int = 32) -> None:
        self.node = node
        self.fatal = fatal
        self.give_up_after = give_up_after
        self.rejected = 0
        self._in_a_row = 0

    def isolatable(self, exc: BaseException) -> bool:
        """Whether a failure may be about the batch's messages."""
        return isinstance(exc, Exception) and not isinstance(exc, ConfigError) and not self.fatal(exc)

    def retry(self, batch: Batch, apply: Callable[[Batch], Out], error: BaseException) -> list[Out]:
        """``apply`` each message's rows alone, then an empty batch carrying the meta, with the
        failing messages moved from ``offset_ranges`` to ``rejected``; the outputs in order.

        Raises:
            BaseException: ``error``, if the batch is not from Kafka or the failures do not stop.
        """
        groups = message_rows(batch)
        if groups is None or not self.isolatable(error):
            raise error
        outputs: list[Out] = []
        reasons: dict[MessageId, str] = {}
        for message, rows in groups.items():
            try:
                outputs.append(apply(replace(batch.take(rows), meta={})))
                self._in_a_row = 0
            except Exception as exc:
                if not self.isolatable(exc):
                    raise
                self._in_a_row += 1
                if self._in_a_row >= self.give_up_after:
                    raise exc from error
                reasons[message] = f"{self.node}: {type(exc).__name__}: {exc}"[:_MAX_REASON]
                log.warning("%s failed on %s/%d@%d; setting the message aside: %s", self.node, *message,
                            reasons[message])
        kept, taken = split_ranges(batch.meta.get("offset_ranges", []), set(reasons))  # type: ignore[arg-type]
        rejected = [[*m, reasons[m], taken[m]] for m in reasons]
        self.rejected += len(rejected)
        meta = {**batch.meta, "offset_ranges": kept,
                "rejected": [*batch.meta.get("rejected", []), *rejected]}  # type: ignore[list-item]
        outputs.append(apply(replace(batch.take([]), meta=meta)))
        return outputs


__all__ = ["Isolator", "message_rows", "split_ranges", "MessageId"]
