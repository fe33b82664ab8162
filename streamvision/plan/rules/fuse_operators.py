"""Fuse chains of operators that run alike into one actor pool (as Ray Data fuses maps).

Two adjacent operators fuse when the upstream one feeds only the downstream one and both
ask for the same resources (replicas, CPUs, GPUs, restarts, batching). A cheap step such
as whole-frame patching then costs no extra actor, hop or object-store copy.
"""

from __future__ import annotations

from dataclasses import replace

from operators.fused import FusedOperator
from streamvision.plan.dataflow import Dataflow, Node


def _fusible(up: Node, down: Node, flow: Dataflow) -> bool:
    return (
        up.kind == "operator"
        and down.kind == "operator"
        and len(flow.children(up.id)) == 1
        and up.resources == down.resources
    )


def fuse_operators(flow: Dataflow) -> Dataflow:
    """A new flow in which every fusible chain is one :class:`FusedOperator` node.

    >>> from operators.sources.video_file import VideoFileSource
    >>> from operators.patches.whole_frame import WholeFramePatches
    >>> from operators.featurizers.color_histogram import ColorHistogram
    >>> from operators.sinks.store_sink import StoreSink
    >>> flow = Dataflow("f")
    >>> flow.source(VideoFileSource(path="v.avi")).then(WholeFramePatches()).then(
    ...     ColorHistogram()).sink(StoreSink(data="/tmp/d"))
    >>> [n.id for n in fuse_operators(flow).nodes]
    ['video_file', 'whole_frame->color_histogram', 'store']
    """
    nodes = list(flow.nodes)
    changed = True
    while changed:
        changed = False
        current = Dataflow(flow.name, nodes)
        for down in nodes:
            up = next((n for n in nodes if n.id == down.upstream), None)
            if up is None or not _fusible(up, down, current):
                continue
            parts = [*(up.component.operators if isinstance(up.component, FusedOperator) else [up.component]),
                     *(down.component.operators if isinstance(down.component, FusedOperator) else [down.component])]
            fused = FusedOperator(parts)
            merged = replace(up, id=fused.name, component=fused)
            nodes = [merged if n.id == up.id else n for n in nodes if n.id != down.id]
            nodes = [replace(n, upstream=merged.id) if n.upstream in (up.id, down.id) and n.id != merged.id else n
                     for n in nodes]
            changed = True
            break
    return Dataflow(flow.name, nodes)
