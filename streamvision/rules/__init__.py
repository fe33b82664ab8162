"""Plan rewrite rules, one per module, applied to a validated :class:`Dataflow` before it runs."""

from __future__ import annotations

from streamvision.dataflow import Dataflow
from streamvision.rules.fuse_operators import fuse_operators

RULES = (fuse_operators,)


def optimize(flow: Dataflow) -> Dataflow:
    """Apply every rule in :data:`RULES`, in order."""
    for rule in RULES:
        flow = rule(flow)
    return flow
