"""The logical dataflow graph: sources, operators and sinks with their resources.

Build a graph in Python, or load the same graph from YAML; :meth:`Dataflow.validate`
checks every edge's declared types before anything runs; ``streamvision.run(flow)`` hands
the graph to the Ray runtime in ``cluster/`` (a layer above this one).

>>> from operators.sources.video_file import VideoFileSource
>>> from operators.patches.whole_frame import WholeFramePatches
>>> from operators.featurizers.color_histogram import ColorHistogram
>>> from operators.sinks.store_sink import StoreSink
>>> flow = Dataflow("vtest")
>>> (flow.source(VideoFileSource(path="vtest.avi"), max_batch=16)
...      .then(WholeFramePatches())
...      .then(ColorHistogram(bins=8), replicas=2)
...      .sink(StoreSink(data="/tmp/sv-data")))
>>> [node.id for node in flow.nodes]
['video_file', 'whole_frame', 'color_histogram', 'store']
>>> flow.validate()["color_histogram"].dim
2048

The same graph as YAML::

    name: vtest
    source: {op: video_file, path: vtest.avi, max_batch: 16}
    steps:
      - {op: whole_frame}
      - {op: color_histogram, bins: 8, replicas: 2}
    sink: {op: store, data: /tmp/sv-data}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from operators import registry
from operators.base import Operator, Sink, Source
from streamvision.core.errors import ConfigError, GraphValidationError
from streamvision.core.types import PatchType, StreamType, check_edge, check_labels


#: ``nice`` of a pipeline's actors when it writes into a served collection (see
#: :attr:`Resources.nice`): the lowest priority, below the service's writer, shards and front end
#: (which the local Ray of ``streamvision serve`` runs at 0; a Ray started otherwise runs every
#: worker at 15). Ingest is measured in frames per second and absorbs a wait in its queues; a
#: query waiting behind a decoding actor for a core is what a user sees.
SERVED_INGEST_NICE = 19


@dataclass(frozen=True)
class Resources:
    """How a node runs: its actor pool and batching.

    Attributes:
        replicas: actors in the pool (for sources: consumers / readers).
        num_cpus: CPUs per actor (also the operator's thread count).
        num_gpus: GPUs per actor, fractional allowed (0.25 = four actors share a GPU).
        custom_resources: Ray custom resources per actor (``{"camera-node": 1}``), which place
            it on the nodes that declare them (``ray start --resources``, a KubeRay group's
            ``rayStartParams``): the node that has the cameras' network, the disk of the store.
        max_restarts: restarts of a killed actor; its in-flight batches are retried.
        max_batch: largest batch in frames; sources read this many, operators merge
            queued upstream batches up to it (dynamic batching). ``None``: as they come.
        max_wait_ms: how long an operator holds a partial batch waiting for more input.
        max_in_flight: batches queued or running per edge (backpressure); ``None`` = 2 per replica.
        nice: the CPU niceness (0..19) each actor's process runs at. A process may lower its
            priority but not raise it, so a value below the niceness Ray started the worker at
            (15 on a Ray started by ``ray start`` or ``ray.init()``, 0 on the local Ray of
            ``streamvision serve``) leaves it there. ``None``: as Ray started it, or
            :data:`SERVED_INGEST_NICE` when the flow writes into a served collection, so that
            on shared cores the service's queries go before ingest.
    """

    replicas: int = 1
    num_cpus: float = 1.0  # sources and sinks default to 0.5 (see Dataflow.source / Stream.sink)
    num_gpus: float = 0.0
    custom_resources: dict[str, float] = field(default_factory=dict)
    max_restarts: int = 3
    max_batch: int | None = None
    max_wait_ms: float = 20.0
    max_in_flight: int | None = None
    nice: int | None = None

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ConfigError(f"replicas must be >= 1, got {self.replicas}")
        if self.num_cpus < 0 or self.num_gpus < 0:
            raise ConfigError("num_cpus and num_gpus must be >= 0")
        if not isinstance(self.custom_resources, dict):
            raise ConfigError(f"custom_resources must be a mapping of name to amount, got {self.custom_resources!r}")
        for name, amount in self.custom_resources.items():
            if not isinstance(name, str) or not name or name in ("CPU", "GPU", "memory", "object_store_memory"):
                raise ConfigError(f"custom resource name {name!r} must be a non-empty name other than CPU, GPU, "
                                  f"memory and object_store_memory (use num_cpus / num_gpus)")
            if not isinstance(amount, (int, float)) or isinstance(amount, bool) or amount < 0:
                raise ConfigError(f"custom resource {name!r} must be a number >= 0, got {amount!r}")
        if self.max_batch is not None and self.max_batch < 1:
            raise ConfigError(f"max_batch must be >= 1, got {self.max_batch}")
        if self.max_wait_ms < 0:
            raise ConfigError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if self.max_in_flight is not None and self.max_in_flight < 1:
            raise ConfigError(f"max_in_flight must be >= 1, got {self.max_in_flight}")
        if self.nice is not None and not 0 <= self.nice <= 19:
            raise ConfigError(f"nice must be 0..19 (a niceness), got {self.nice}")

    @property
    def capacity(self) -> int:
        """Batches allowed in flight on the edge into this node."""
        return self.max_in_flight or 2 * self.replicas


@dataclass(frozen=True)
class Node:
    """One logical node: a source, an operator or a sink, and how it runs."""

    id: str
    kind: Literal["source", "operator", "sink"]
    component: Any
    upstream: str | None
    resources: Resources


@dataclass
class Stream:
    """The output of a node; extend the graph from it."""

    flow: "Dataflow"
    node_id: str

    def then(self, operator: Operator, **resources: Any) -> "Stream":
        """Add ``operator`` reading this stream; ``resources`` are :class:`Resources` fields."""
        return self.flow._add("operator", operator, self.node_id, resources)

    def sink(self, sink: Sink, **resources: Any) -> None:
        """End this stream in ``sink`` (one actor, 0.5 CPU by default; ``resources`` as for :meth:`then`)."""
        resources.setdefault("num_cpus", 0.5)
        self.flow._add("sink", sink, self.node_id, resources)


@dataclass
class Dataflow:
    """A named graph of sources, operators and sinks."""

    name: str
    nodes: list[Node] = field(default_factory=list)

    def source(self, source: Source, **resources: Any) -> Stream:
        """Add a source; ``max_batch`` (default 16) is the number of frames it reads per batch."""
        resources.setdefault("max_batch", 16)
        resources.setdefault("num_cpus", 0.5)
        return self._add("source", source, None, resources)

    def _add(self, kind: Literal["source", "operator", "sink"], component: Any, upstream: str | None,
             resources: dict[str, Any]) -> Stream:
        expected = {"source": Source, "operator": Operator, "sink": Sink}[kind]
        if not isinstance(component, expected):
            raise ConfigError(f"{kind} must be an {expected.__name__}, got {type(component).__name__}")
        try:
            res = Resources(**resources)
        except TypeError as exc:
            raise ConfigError(f"{component.name}: unknown resource option: {exc}") from exc
        if kind == "sink" and res.replicas != 1:
            raise ConfigError(f"sink {component.name!r} runs as one actor (replicas=1)")
        if kind == "operator" and component.stateful and res.replicas != 1:
            raise ConfigError(f"{component.name!r} keeps state across batches and runs as one actor (replicas=1)")
        base = component.name
        taken = {n.id for n in self.nodes}
        node_id = base if base not in taken else next(f"{base}#{i}" for i in range(2, 1000) if f"{base}#{i}" not in taken)
        self.nodes.append(Node(node_id, kind, component, upstream, res))
        return Stream(self, node_id)

    def node(self, node_id: str) -> Node:
        """The node with this id."""
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)

    def children(self, node_id: str) -> list[Node]:
        """Nodes reading the output of ``node_id``."""
        return [n for n in self.nodes if n.upstream == node_id]

    def validate(self) -> dict[str, StreamType]:
        """Check the graph and every edge's types; return each node's output type.

        Raises:
            GraphValidationError: no source, a stream that ends nowhere, or two connected
                operators that disagree (the message names both).
        """
        if not any(n.kind == "source" for n in self.nodes):
            raise GraphValidationError(f"dataflow {self.name!r} has no source")
        types: dict[str, StreamType] = {}
        featurizer: dict[str, dict[str, Any] | None] = {}
        for node in self.nodes:  # nodes are added after their upstream, so this is topological
            if node.kind == "source":
                types[node.id] = node.component.output_type()
                featurizer[node.id] = None
                continue
            assert node.upstream is not None
            produced = types[node.upstream]
            check_edge(node.upstream, produced, node.id, node.component.input_type())
            featurizer[node.id] = featurizer[node.upstream]
            if node.kind == "sink":
                if hasattr(node.component, "bind") and isinstance(produced, PatchType):
                    node.component.bind(produced, featurizer[node.id])
                continue
            check_labels(node.upstream, produced, node.id, node.component.required_labels())
            types[node.id] = node.component.output_type(produced)
            out = types[node.id]
            if isinstance(out, PatchType) and out.kind == "vector" and hasattr(node.component, "spec"):
                featurizer[node.id] = node.component.spec()
        for node in self.nodes:
            if node.kind != "sink" and not self.children(node.id):
                raise GraphValidationError(f"the output of {node.id!r} goes nowhere: end it in a sink")
        return types

    def required_resources(self) -> dict[str, float]:
        """CPUs, GPUs and custom resources the graph's actors reserve together."""
        need = {
            "CPU": sum(n.resources.num_cpus * n.resources.replicas for n in self.nodes),
            "GPU": sum(n.resources.num_gpus * n.resources.replicas for n in self.nodes),
        }
        for n in self.nodes:
            for name, amount in n.resources.custom_resources.items():
                need[name] = need.get(name, 0.0) + amount * n.resources.replicas
        return need

    @classmethod
    def from_config(cls, config: dict[str, Any], *, base_dir: str | Path = ".") -> "Dataflow":
        """Build a linear graph from a pipeline dict (the YAML form); see the module docstring."""
        try:
            spec = PipelineConfig.model_validate(config)
        except ValidationError as exc:
            raise ConfigError(f"bad pipeline: {exc}") from exc
        flow = cls(spec.name)
        src_opts, src_res = spec.source.split()
        for key in ("path", "data"):
            if key in src_opts and not str(src_opts[key]).startswith(("/", "rtsp:", "http:", "https:")):
                src_opts[key] = str(Path(base_dir) / src_opts[key])
        stream = flow.source(registry.build(spec.source.op, src_opts), **src_res)
        for step in spec.steps:
            options, res = step.split()
            stream = stream.then(registry.build(step.op, options), **res)
        sink_opts, sink_res = spec.sink.split()
        if "data" in sink_opts and not str(sink_opts["data"]).startswith("/"):
            sink_opts["data"] = str(Path(base_dir) / sink_opts["data"])
        stream.sink(registry.build(spec.sink.op, sink_opts), **sink_res)
        return flow

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Dataflow":
        """Load a pipeline file; relative paths in it are relative to the file."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"pipeline file not found: {path}")
        try:
            config = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
        if not isinstance(config, dict):
            raise ConfigError(f"{path} must hold a mapping with name, source, steps and sink")
        return cls.from_config(config, base_dir=path.parent)


_RESOURCE_KEYS = frozenset(Resources.__dataclass_fields__)


class StepConfig(BaseModel):
    """One step of a pipeline file: ``op`` plus options; resource keys go to :class:`Resources`."""

    model_config = ConfigDict(extra="allow")
    op: str

    def split(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(operator options, resources)``."""
        extra = dict(self.model_extra or {})
        resources = {k: extra.pop(k) for k in list(extra) if k in _RESOURCE_KEYS}
        return extra, resources


class PipelineConfig(BaseModel):
    """A pipeline file: a source, a list of steps, a sink."""

    model_config = ConfigDict(extra="forbid")
    name: str = "pipeline"
    source: StepConfig
    steps: list[StepConfig] = Field(default_factory=list)
    sink: StepConfig
