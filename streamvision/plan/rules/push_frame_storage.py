"""Push a store sink's ``store_frames`` down to the Kafka sources that feed it.

The sink says how a collection keeps its pixels; the source is where the frames are decoded, so
it encodes them there (a frame file costs one JPEG encode of frames already in memory) and hands
on only the bytes to keep. File sources keep their frames as the original file (DeepLens'
encoded file): asking for a frame file (``jpeg``, ``raw``) over file input is refused.
"""

from __future__ import annotations

from dataclasses import replace

from streamvision.core.errors import ConfigError
from streamvision.plan.dataflow import Dataflow, Node

#: Formats a source that keeps no pixels of its own (a file) can satisfy: its original is kept.
_FILE_FORMATS = ("segments", "source", "none")


def _source_of(node: Node, flow: Dataflow) -> Node:
    while node.upstream is not None:
        node = next(n for n in flow.nodes if n.id == node.upstream)
    return node


def push_frame_storage(flow: Dataflow) -> Dataflow:
    """A new flow in which each Kafka source keeps pixels as the store sink below it asks.

    Raises:
        ConfigError: two sinks ask one source for different formats, or a file source is
            asked for a frame file.
    """
    wanted: dict[str, tuple[str, float, str]] = {}
    for sink in (n for n in flow.nodes if n.kind == "sink"):
        store_frames = getattr(sink.component, "store_frames", None)
        if store_frames is None:
            continue
        source = _source_of(sink, flow)
        ask = (store_frames, float(getattr(sink.component, "segment_seconds", 2.0)), sink.id)
        if source.id in wanted and wanted[source.id][:2] != ask[:2]:
            raise ConfigError(f"sinks {wanted[source.id][2]!r} and {sink.id!r} keep the frames of {source.id!r} "
                              f"differently ({wanted[source.id][0]} vs {store_frames}): give them one store_frames")
        wanted[source.id] = ask
    nodes = []
    for node in flow.nodes:
        if node.id in wanted:
            store_frames, seconds, sink = wanted[node.id]
            if hasattr(node.component, "with_frame_storage"):
                node = replace(node, component=node.component.with_frame_storage(store_frames, seconds))
            elif store_frames not in _FILE_FORMATS:
                raise ConfigError(f"sink {sink!r} asks for store_frames={store_frames!r}, but {node.id!r} reads "
                                  f"files, which are kept as their originals: use {', '.join(_FILE_FORMATS)}")
        nodes.append(node)
    return Dataflow(flow.name, nodes)
