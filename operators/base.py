"""The three kinds of operator: sources, transforms and sinks. None of them knows Ray.

A transform is a plain class with a declared input and output type and a
``setup / process(batch) / teardown`` life. The Ray runtime in ``cluster/`` wraps each in
an actor pool; a test or a plain loop can call them directly on a list of frames:

>>> from operators.patches.whole_frame import WholeFramePatches
>>> op = WholeFramePatches()
>>> op.setup(OperatorContext())
>>> # patches = op.process(frame_batch)

Operators are constructed with keyword-only, validated options, so that a bad option in a
pipeline file fails when the graph is built, not when the first frame arrives.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Iterator, TypeVar

from streamvision.core.frames import FrameBatch
from streamvision.core.patches import PatchBatch
from streamvision.core.types import FrameType, PatchType, StreamType

In = TypeVar("In", FrameBatch, PatchBatch)
Out = TypeVar("Out", FrameBatch, PatchBatch)


@dataclass(frozen=True)
class OperatorContext:
    """Where an operator runs: set by the runtime before ``setup``.

    Attributes:
        device: ``"cpu"`` or ``"cuda"`` / ``"cuda:N"``.
        num_threads: threads the operator may use (the actor's ``num_cpus``).
        replica: this replica's index in its pool.
    """

    device: str = "cpu"
    num_threads: int = 1
    replica: int = 0


class Operator(ABC, Generic[In, Out]):
    """A transform from one batch to another batch.

    Subclasses set ``name`` (stable: it goes into patch ids) and implement
    :meth:`input_type`, :meth:`output_type` and :meth:`process`.
    """

    name: ClassVar[str]
    #: True for an operator holding state across batches (a tracker): it runs as one actor.
    stateful: ClassVar[bool] = False

    @abstractmethod
    def input_type(self) -> StreamType:
        """The type of stream this operator accepts."""

    @abstractmethod
    def output_type(self, upstream: StreamType) -> StreamType:
        """The type it produces when fed ``upstream``."""

    def required_labels(self) -> frozenset[str]:
        """Labels this operator relies on upstream being able to produce (filters override)."""
        return frozenset()

    def setup(self, context: OperatorContext) -> None:
        """Load models and allocate buffers; called once per replica before any batch."""

    @abstractmethod
    def process(self, batch: In) -> Out:
        """Transform one batch."""

    def teardown(self) -> None:
        """Release what ``setup`` took."""


class Source(ABC):
    """Produces frame batches; ``read`` ends at end of stream (bounded sources)."""

    name: ClassVar[str]

    @abstractmethod
    def output_type(self) -> FrameType:
        """The type of the frames it produces (sizes known after ``open`` may be ``None``)."""

    def open(self) -> None:
        """Open files or connections; raise :class:`~streamvision.core.errors.InputError` on bad input."""

    @abstractmethod
    def read(self, max_batch: int) -> Iterator[FrameBatch]:
        """Yield batches of at most ``max_batch`` frames."""

    def seek(self, offsets: dict[tuple[str, int], int]) -> None:
        """Resume from ``(topic, partition) -> next offset`` recovered from the sink's store.

        Called by the runtime after ``open`` and before ``read``; file sources ignore it.
        """

    def join(self, replicas: int) -> None:
        """Told, after ``seek`` and before ``read``, how many replicas read this source together.

        A source whose input a group shares out (Kafka) waits here until this replica holds no
        more than its share, so that a bounded run's work spreads over every replica; others
        ignore it.
        """

    def reject(self, messages: list[list[Any]]) -> FrameBatch:
        """Messages an operator or the sink failed on, as ``[topic, partition, offset, reason,
        ranges]`` (:mod:`operators.quarantine`): set each aside (Kafka: dead-letter it) and
        return an empty batch whose ``offset_ranges`` are the messages' ``ranges``.

        Only frames with Kafka keys are ever rejected; other sources refuse.
        """
        raise NotImplementedError(f"the {self.name} source has no dead-letter topic for {len(messages)} messages")

    def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        """Told which offsets are durably done (Kafka sources commit them for lag monitoring)."""

    def close(self) -> None:
        """Release what ``open`` took."""


class Sink(ABC):
    """Consumes patch batches durably."""

    name: ClassVar[str]

    @abstractmethod
    def input_type(self) -> PatchType:
        """The type of patches it accepts."""

    def open(self) -> None:
        """Open the stores."""

    @abstractmethod
    def write(self, batch: PatchBatch) -> int:
        """Write one batch durably; return the number of patches written."""

    def committed_offsets(self) -> dict[tuple[str, int], int]:
        """``(topic, partition) -> next offset`` durably done, for sources to resume from."""
        return {}

    def close(self) -> None:
        """Flush and close the stores."""

    def stats(self) -> dict[str, Any]:
        """Counts to report at the end of a run."""
        return {}


__all__ = ["Operator", "OperatorContext", "Source", "Sink", "FrameType", "PatchType"]
