"""Plan rewrite rules, one per module, applied to a validated :class:`Dataflow` before it runs."""

from __future__ import annotations

from streamvision.plan.dataflow import Dataflow
from streamvision.plan.rules.fuse_operators import fuse_operators
from streamvision.plan.rules.push_frame_storage import push_frame_storage
from streamvision.plan.rules.push_tracker_state import push_tracker_state

RULES = (push_frame_storage, push_tracker_state, fuse_operators)


def optimize(flow: Dataflow) -> Dataflow:
    """Apply every rule in :data:`RULES`, in order."""
    for rule in RULES:
        flow = rule(flow)
    return flow
