"""Tell each tracker where its collection is stored, so a restarted tracker restores its tracks.

A tracker's state is derived from the record: the detections its store sink wrote. The rule
gives every tracker without a ``state`` the data directory of the one store sink below it
(:meth:`operators.tracking.tracker.ObjectTracker.with_state`); a tracker feeding several
store sinks, or none, keeps starting empty.
"""

from __future__ import annotations

from dataclasses import replace

from streamvision.plan.dataflow import Dataflow, Node


def _sinks_below(node: Node, flow: Dataflow) -> list[Node]:
    out, frontier = [], [node]
    while frontier:
        for child in flow.children(frontier.pop().id):
            (out if child.kind == "sink" else frontier).append(child)
    return out


def push_tracker_state(flow: Dataflow) -> Dataflow:
    """A new flow whose trackers restore from the store sink they feed."""
    nodes = []
    for node in flow.nodes:
        if hasattr(node.component, "with_state") and getattr(node.component, "state", "") is None:
            stores = {str(s.component.data) for s in _sinks_below(node, flow) if getattr(s.component, "data", None)}
            if len(stores) == 1:
                node = replace(node, component=node.component.with_state(stores.pop()))
        nodes.append(node)
    return Dataflow(flow.name, nodes)
