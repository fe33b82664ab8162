"""Operator fusion: a chain of operators run as one, in one actor, with no hand-off between them."""

from __future__ import annotations

from typing import Any

from operators.base import Operator, OperatorContext
from streamvision.core.types import StreamType


class FusedOperator(Operator[Any, Any]):
    """Run ``operators`` one after the other on each batch (what the fusion rule builds).

    >>> from operators.patches.whole_frame import WholeFramePatches
    >>> from operators.featurizers.color_histogram import ColorHistogram
    >>> FusedOperator([WholeFramePatches(), ColorHistogram()]).name
    'whole_frame->color_histogram'
    """

    def __init__(self, operators: list[Operator]) -> None:
        if len(operators) < 2:
            raise ValueError("fusion needs at least two operators")
        self.operators = operators
        self.name = "->".join(op.name for op in operators)  # type: ignore[misc]

    def input_type(self) -> StreamType:
        """What the first operator accepts."""
        return self.operators[0].input_type()

    def output_type(self, upstream: StreamType) -> StreamType:
        """What the last operator produces."""
        for op in self.operators:
            upstream = op.output_type(upstream)
        return upstream

    def setup(self, context: OperatorContext) -> None:
        """Set up every operator in the chain."""
        for op in self.operators:
            op.setup(context)

    def process(self, batch: Any) -> Any:
        """Pass the batch through the chain."""
        for op in self.operators:
            batch = op.process(batch)
        return batch

    def teardown(self) -> None:
        """Tear down every operator in the chain."""
        for op in self.operators:
            op.teardown()
