"""Keep only the patches whose label is in a set (``WHERE label IN (...)``)."""

from __future__ import annotations

import numpy as np

from operators.base import Operator
from streamvision.core.errors import ConfigError
from streamvision.core.patches import PatchBatch
from streamvision.core.types import PatchType, StreamType


class LabelFilter(Operator[PatchBatch, PatchBatch]):
    """Pass patches labelled with one of ``labels``; validation checks the labels can occur.

    Args:
        labels: the labels to keep (for example ``["person", "car"]``).
        min_score: also drop patches scoring below this.

    >>> LabelFilter(labels=["car"]).required_labels()
    frozenset({'car'})
    """

    name = "label_filter"

    def __init__(self, *, labels: list[str], min_score: float = 0.0) -> None:
        if not labels or not all(isinstance(x, str) and x for x in labels):
            raise ConfigError(f"label_filter: labels must be a non-empty list of names, got {labels!r}")
        self.labels = frozenset(labels)
        self.min_score = float(min_score)

    def input_type(self) -> StreamType:
        """Patches of any kind."""
        return PatchType()

    def output_type(self, upstream: StreamType) -> StreamType:
        """The upstream type, with the label domain narrowed to the kept labels."""
        assert isinstance(upstream, PatchType)
        domain = self.labels if upstream.label_domain is None else upstream.label_domain & self.labels
        return PatchType(kind=upstream.kind, dim=upstream.dim, label_domain=domain)

    def required_labels(self) -> frozenset[str]:
        """The labels filtered on: each must be producible upstream."""
        return self.labels

    def process(self, batch: PatchBatch) -> PatchBatch:
        """The rows whose label is kept and whose score is high enough."""
        keep = np.fromiter((label in self.labels for label in batch.labels), bool, len(batch))
        return batch.take(keep & (batch.scores >= self.min_score))
