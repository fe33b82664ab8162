"""The Ray actors that host sources, operators and sinks.

Each wraps one Ray-free component from ``operators/``. Batches travel between them as
object refs (the object store hands numpy buffers over without copies); only small
status values and acks come back to the driver.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import Any, Sequence

import numpy as np
import ray
from ray.util import metrics

from cluster.priority import lower_priority
from cluster.service import names
from cluster.service.writer import find_writer
from operators.base import Operator, OperatorContext, Sink, Source
from operators.quarantine import Isolator
from operators.sinks.store_sink import StoreSink
from streamvision.core.frames import FrameBatch
from streamvision.core.patches import PatchBatch

_LATENCY_BOUNDS_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]
#: Extra column naming the collection a patch goes to after a featurizer swap (see :meth:`SinkActor.write`).
ROUTE_COLUMN = "collection"


def _merge(batches: Sequence[Any]) -> Any:
    """One batch from several (dynamic batching)."""
    if len(batches) == 1:
        return batches[0]
    if isinstance(batches[0], PatchBatch):
        return PatchBatch.concat(batches)
    return FrameBatch.concat(batches)


def mergeable_runs(batches: Sequence[Any]) -> list[list[Any]]:
    """Consecutive batches grouped so that each group merges into one batch: frames of one image
    size per group (cameras of different resolutions feed one operator); patches always merge.
    Empty frame batches (dead letters only) join any group."""
    if not isinstance(batches[0], FrameBatch):
        return [list(batches)]
    runs: list[list[Any]] = []
    shape = None
    for batch in batches:
        this = batch.images.shape[1:] if len(batch) else None
        if runs and (this is None or shape is None or this == shape):
            runs[-1].append(batch)
        else:
            runs.append([batch])
        shape = this or shape
    return runs


def process_batches(operator: Operator, batches: Sequence[Any], isolator: Isolator | None = None) -> Any:
    """Run ``operator`` on the merged ``batches``: once per run of same-size frames, outputs merged.
    With an ``isolator``, a run that fails is run again one source message at a time."""
    outputs = []
    for run in mergeable_runs(batches):
        merged = _merge(run)
        try:
            outputs.append(operator.process(merged))
        except Exception as exc:
            if isolator is None:
                raise
            outputs.append(_merge(isolator.retry(merged, operator.process, exc)))
    return _merge(outputs)


def _fit_empty(batches: list[PatchBatch]) -> list[PatchBatch]:
    """Batches left empty by :meth:`SinkActor._route` (their offsets still count) made mergeable
    with the rest: vectors of the others' dimension, or none when every batch is empty."""
    dims = {b.vectors.shape[1] for b in batches if len(b) and b.vectors is not None}
    if len(batches) == 1 or len(dims) > 1:
        return batches
    empty = np.zeros((0, dims.pop()), np.float32) if dims else None
    return [replace(b, vectors=empty) if not len(b) else b for b in batches]


def _ray_failure(exc: BaseException) -> bool:
    """Errors of Ray itself (a dead actor, a lost object): never one message's fault."""
    return isinstance(exc, ray.exceptions.RayError) and not isinstance(exc, ray.exceptions.RayTaskError)


class _Instrumented:
    """Per-node Prometheus metrics through ``ray.util.metrics``, and the process's CPU priority."""

    def _init_metrics(self, node_id: str, nice: int | None = None) -> None:
        if nice is not None:  # the actor owns its worker process (Ray starts one per actor)
            lower_priority(nice)
        self._tags = {"node": node_id}
        self._items = metrics.Counter(
            "streamvision_items_total", description="Frames or patches processed.", tag_keys=("node",))
        self._batches = metrics.Counter(
            "streamvision_batches_total", description="Batches processed.", tag_keys=("node",))
        self._latency = metrics.Histogram(
            "streamvision_batch_latency_ms", description="Time to process one batch.",
            boundaries=_LATENCY_BOUNDS_MS, tag_keys=("node",))

    def _record(self, items: int, started: float) -> None:
        if items:  # empty batches (offsets only, idle Kafka sources) are legal; Counter.inc(0) raises
            self._items.inc(items, tags=self._tags)
        self._batches.inc(1, tags=self._tags)
        self._latency.observe((time.perf_counter() - started) * 1000.0, tags=self._tags)


@ray.remote
class SourceActor(_Instrumented):
    """Reads a source; on (re)start it resumes from the offsets its sinks have stored (with
    several sinks, from the least advanced of them: each partition resumes where every sink
    still needs it)."""

    def __init__(self, node_id: str, source: Source, max_batch: int, sinks: list[Any], replicas: int = 1,
                 nice: int | None = None) -> None:
        self._init_metrics(node_id, nice)
        self.source = source
        self.max_batch = max_batch
        self.sinks = sinks
        self.replicas = replicas
        self._iter: Any = None
        self._opened = False

    def open(self) -> bool:
        """Open and check the input (raises the source's error)."""
        if not self._opened:
            self.source.open()
            self._opened = True
        return True

    def _start(self) -> None:
        self.open()
        stored = ray.get([sink.committed_offsets.remote() for sink in self.sinks])
        self.source.seek(least_advanced(stored))
        end_with_group = getattr(self.source, "end_with_group", None)
        if self.replicas > 1 and self.sinks and callable(end_with_group):
            end_with_group()  # the sinks report durable offsets: end when the group's input is done
        self.source.join(self.replicas)
        self._iter = iter(self.source.read(self.max_batch))

    @ray.method(num_returns=2)
    def next(self) -> tuple[int, FrameBatch | None]:
        """``(frames, batch)``; ``(-1, None)`` at end of stream."""
        if self._iter is None:
            self._start()
        started = time.perf_counter()
        batch = next(self._iter, None)
        if batch is None:
            return -1, None
        self._record(len(batch), started)
        return len(batch), batch

    @ray.method(num_returns=2)
    def reject(self, messages: list[list[Any]]) -> tuple[int, FrameBatch]:
        """Dead-letter messages that failed downstream; ``(0, batch)`` with the batch that
        completes their offsets (see :mod:`operators.quarantine`)."""
        self.open()
        return 0, self.source.reject(messages)

    def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        """Pass durably-done offsets to the source (Kafka commits them)."""
        self.source.commit(offsets)

    def stats(self) -> dict[str, Any]:
        """The source's counters (e.g. dead-lettered messages), if it keeps any."""
        stats = getattr(self.source, "stats", None)
        return stats() if callable(stats) else {}

    def close(self) -> None:
        """Close the source."""
        self.source.close()


def least_advanced(stored: Sequence[dict[tuple[str, int], int]]) -> dict[tuple[str, int], int]:
    """Per partition, the lowest offset over several sinks' stored offsets; a partition that a
    sink has no offset for is left out (it reads from the log start).

    >>> least_advanced([{("t", 0): 5, ("t", 1): 2}, {("t", 0): 3}])
    {('t', 0): 3}
    """
    if not stored:
        return {}
    keys = set(stored[0]).intersection(*stored[1:])
    return {key: min(offsets[key] for offsets in stored) for key in sorted(keys)}


def operator_version(operator: Operator) -> str:
    """The version an operator stamps (its ``version``, e.g. a model file's digest), else its name."""
    return str(getattr(operator, "version", None) or operator.name)


@ray.remote
class OperatorActor(_Instrumented):
    """Runs one replica of a transform; the model stays loaded for the actor's life, or until
    :meth:`swap` replaces the operator between two batches (hot swap, :mod:`cluster.hot_swap`)."""

    def __init__(self, node_id: str, operator: Operator, context: OperatorContext, nice: int | None = None) -> None:
        self._init_metrics(node_id, nice)
        self.operator = operator
        if context.device.startswith("cuda"):
            import torch

            context = OperatorContext(device=context.device if torch.cuda.is_available() else "cpu",
                                      num_threads=context.num_threads, replica=context.replica)
        operator.setup(context)
        self.context = context
        self.isolator = Isolator(node_id, fatal=_ray_failure)
        self.version = operator_version(operator)
        self.collection: str | None = None  # where a swapped-in featurizer's patches go
        self.counts: dict[str, int] = {}

    def process(self, *batches: Any) -> Any:
        """Transform the (merged) batches; messages the operator fails on are set aside."""
        started = time.perf_counter()
        out = process_batches(self.operator, batches, self.isolator)
        items = sum(len(b) for b in batches)
        self.counts[self.version] = self.counts.get(self.version, 0) + items
        self._record(items, started)
        if self.collection is not None and isinstance(out, PatchBatch):
            out = replace(out, extra={**out.extra, ROUTE_COLUMN: [self.collection] * len(out)})
        return out

    def swap(self, operator: Operator, collection: str | None = None) -> dict[str, str]:
        """Replace the operator between two batches (the calls sent before this one ran with the
        old one, those sent after run with the new); ``collection``: the data directory the new
        operator's patches go to (a featurizer's), ``None`` for the pipeline's own sink."""
        operator.setup(self.context)
        old, old_version = self.operator, self.version
        self.operator, self.version, self.collection = operator, operator_version(operator), collection
        old.teardown()
        return {"old": old_version, "new": self.version}

    def versions(self) -> dict[str, int]:
        """Items processed by each operator version this replica ran."""
        return dict(self.counts)

    def teardown(self) -> None:
        """Release the operator's resources."""
        self.operator.teardown()


@ray.remote
class SinkActor(_Instrumented):
    """Writes batches durably; opens its stores lazily so a restart reopens them.

    A sink whose data directory a live service serves hands its batches to the service's
    writer actor instead (``cluster.service.writer``): the service's shards are the index.
    """

    def __init__(self, node_id: str, sink: Sink, nice: int | None = None) -> None:
        self._init_metrics(node_id, nice)
        self.sink = sink
        self._opened = False
        self._writer: Any = None
        self._served: dict[str, int] = {"written": 0, "vectors": 0}
        self._routed: dict[str, StoreSink] = {}  # collections of swapped-in featurizers
        self.isolator = Isolator(node_id, fatal=_ray_failure)

    def open(self) -> bool:
        """Open the stores, or find the service's writer."""
        if not self._opened:
            data = getattr(self.sink, "data", None)
            self._writer = find_writer(data) if data and names.read_record(data) is not None else None
            if self._writer is None:
                self.sink.open()
            else:
                options = getattr(self.sink, "writer_options", dict)()
                ray.get(self._writer.adopt.remote(options.get("featurizer"), options.get("dim")))
            self._opened = True
        return True

    def committed_offsets(self) -> dict[tuple[str, int], int]:
        """Offsets the store says are durably done."""
        self.open()
        if self._writer is not None:
            return ray.get(self._writer.committed_offsets.remote())
        return self.sink.committed_offsets()

    def write(self, *batches: PatchBatch) -> dict[str, Any]:
        """Write the (merged) batches in one go; return counts, completed offsets and the
        messages set aside on the way (``rejected``, for the source to dead-letter)."""
        self.open()
        started = time.perf_counter()
        batch = _merge(_fit_empty([self._route(b) for b in batches]))
        try:
            acks = [self._write(batch)]
        except Exception as exc:
            acks = self.isolator.retry(batch, self._write, exc)
        self._record(len(batch), started)
        offsets: dict[tuple[str, int], int] = {}
        for ack in acks:
            offsets.update(ack["offsets"])
        return {"written": sum(a["written"] for a in acks), "offsets": offsets, "rejected": acks[-1]["rejected"]}

    def route(self, collection: str, featurizer: dict[str, Any] | None) -> None:
        """Prepare the collection a swapped-in featurizer's patches go to (its spec recorded there)."""
        if collection not in self._routed:
            self._routed[collection] = StoreSink(data=collection, featurizer=featurizer,
                                                 index_factory=getattr(self.sink, "index_factory", "Flat"),
                                                 shards=getattr(self.sink, "shards", 2))

    def _route(self, batch: PatchBatch) -> PatchBatch:
        """Write the rows a swapped-in featurizer sent to another collection there (vectors of two
        models are not comparable); return the rest, which carries the batch's offsets here."""
        targets = batch.extra.get(ROUTE_COLUMN)
        if targets is None:
            return batch
        rest = [i for i, t in enumerate(targets) if t is None]
        for target in sorted({t for t in targets if t is not None}):
            self.route(target, None)
            self._routed[target].write(batch.take([i for i, t in enumerate(targets) if t == target]))
        kept = batch.take(rest)
        return replace(kept, extra={k: v for k, v in kept.extra.items() if k != ROUTE_COLUMN})

    def _write(self, batch: PatchBatch) -> dict[str, Any]:
        if self._writer is not None:
            ack = ray.get(self._writer.write.remote(batch))
            self._served["written"] += ack["written"]
            self._served["vectors"] += len(batch) if batch.vectors is not None else 0
            written, offsets = ack["written"], ack["offsets"]
        else:
            written = self.sink.write(batch)
            offsets = getattr(self.sink, "last_offsets", {})
        return {"written": written, "offsets": offsets, "rejected": list(batch.meta.get("rejected", []))}

    def close(self) -> dict[str, Any]:
        """Flush and close; return the sink's stats."""
        self.open()
        routed = {target: sink.stats() for target, sink in self._routed.items()}
        for sink in self._routed.values():
            sink.close()
        self._routed = {}
        if self._writer is not None:
            self._opened = False
            return {**self._served, "service": True, **({"routed": routed} if routed else {})}
        stats = self.sink.stats()
        self.sink.close()
        self._opened = False
        return {**stats, "routed": routed} if routed else stats
