"""The ready-made pipelines behind ``streamvision ingest`` and ``streamvision demo``.

Two featurizer chains, both ending in the store (RocksDB lineage + FAISS):

* ``"models"`` (the default): NanoDet-m finds COCO objects, the tracker gives people and
  vehicles a per-camera ``track_id``, EfficientNet-Lite0 embeds every detected crop and every
  whole frame (1280-d, L2-normalized);
* ``"histogram"``: DeepLens' colour histograms of whole frames (no model, fast).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from operators import registry
from operators.base import Source
from operators.sinks.store_sink import StoreSink
from operators.sources.video_file import VideoFileSource
from streamvision.plan.dataflow import Dataflow
from streamvision.core.errors import ConfigError

Featurizer = Literal["models", "histogram"]
FEATURIZERS: tuple[str, ...] = ("models", "histogram")


#: CPUs the source and the sink each reserve; the featurizing steps share the rest.
EDGE_CPUS = 0.25
#: CPUs one replica of the ``models`` chain (detector + featurizer) is sized for.
MODEL_REPLICA_CPUS = 1.5
#: CPUs the one tracker reserves beside several detector replicas (with one, it shares the
#: detector's actor): it associates boxes, a few milliseconds a frame.
TRACKER_CPUS = 0.25


@dataclass(frozen=True)
class IngestSizing:
    """How :func:`ingest_flow` spreads a CPU/GPU budget over its actors.

    Attributes:
        replicas: actors per featurizing step.
        step_cpus: CPUs per actor of each featurizing step (also its thread count).
        step_gpus: GPUs per actor of each model step (fractional: actors share a GPU).
        tracker_cpus: CPUs of the tracker's own actor, or 0 where it is fused with the one
            detector (or there is none).
    """

    replicas: int
    step_cpus: float
    step_gpus: float
    tracker_cpus: float = 0.0


def size_ingest(featurizer: Featurizer = "models", *, cpus: float = 2.0, gpus: float = 0.0,
                replicas: int | None = None) -> IngestSizing:
    """Share ``cpus`` and ``gpus`` (a machine's or a cluster's) among an ingest graph's actors.

    The source and the sink take :data:`EDGE_CPUS` each. With no ``replicas`` given, the
    ``models`` chain runs one replica per :data:`MODEL_REPLICA_CPUS` CPUs left (at least one)
    and the ``histogram`` chain, which has no model to load, one per CPU left. Each replica's
    two model steps (detector, featurizer) split its share of CPUs and GPUs evenly; the one
    tracker shares the actor of a single detector and takes :data:`TRACKER_CPUS` beside
    several; the ``histogram`` chain's steps fuse into one actor, which takes the whole share.

    >>> size_ingest(cpus=2)
    IngestSizing(replicas=1, step_cpus=0.75, step_gpus=0.0, tracker_cpus=0.0)
    >>> size_ingest(cpus=16, gpus=1)
    IngestSizing(replicas=10, step_cpus=0.7625, step_gpus=0.05, tracker_cpus=0.25)
    >>> size_ingest("histogram", cpus=2)
    IngestSizing(replicas=1, step_cpus=1.5, step_gpus=0.0, tracker_cpus=0.0)

    Raises:
        ConfigError: an unknown featurizer, fewer than 1 CPU, negative GPUs or replicas < 1.
    """
    if featurizer not in FEATURIZERS:
        raise ConfigError(f"unknown featurizer {featurizer!r}; choose one of {FEATURIZERS}")
    if cpus < 1 or gpus < 0:
        raise ConfigError(f"an ingest graph needs at least 1 CPU and >= 0 GPUs, got {cpus:g} CPUs, {gpus:g} GPUs")
    if replicas is not None and replicas < 1:
        raise ConfigError(f"replicas must be >= 1, got {replicas}")
    left = cpus - 2 * EDGE_CPUS
    if featurizer == "histogram":
        n = replicas or max(1, int(left))
        return IngestSizing(n, left / n, 0.0)
    n = replicas or max(1, int((left - TRACKER_CPUS) // MODEL_REPLICA_CPUS))
    tracker = TRACKER_CPUS if n > 1 else 0.0
    return IngestSizing(n, (left - tracker) / (2 * n), gpus / (2 * n), tracker)


def ingest_flow(source: Source, data: str | Path, *, featurizer: Featurizer = "models", replicas: int | None = None,
                cpus: float = 2.0, gpus: float = 0.0, max_batch: int = 16, name: str = "ingest") -> Dataflow:
    """``source`` -> patches -> features -> store in ``data``.

    ``cpus`` and ``gpus`` are the budget the graph's actors reserve together (the machine's
    or the cluster's; the default fits this project's 2-core reference machine), shared out
    by :func:`size_ingest`; ``replicas`` (default: sized from ``cpus``) actors per
    featurizing step share the work. Model steps given a GPU share run on CUDA.
    """
    size = size_ingest(featurizer, cpus=cpus, gpus=gpus, replicas=replicas)
    flow = Dataflow(name)
    stream = flow.source(source, max_batch=max_batch, num_cpus=EDGE_CPUS)
    n, step = size.replicas, {"num_cpus": size.step_cpus, "num_gpus": size.step_gpus}
    if featurizer == "histogram":
        stream = (stream.then(registry.build("whole_frame", {}), replicas=n, num_cpus=size.step_cpus)
                        .then(registry.build("color_histogram", {}), replicas=n, num_cpus=size.step_cpus))
    else:
        stream = (stream.then(registry.build("nanodet", {"whole_frames": True}), replicas=n, max_batch=max_batch, **step)
                        .then(registry.build("tracker", {}), replicas=1, max_batch=max_batch,  # n == 1: fused
                              num_cpus=size.tracker_cpus or size.step_cpus, num_gpus=0.0 if n > 1 else size.step_gpus)
                        .then(registry.build("efficientnet_lite0", {}), replicas=n, max_batch=4 * max_batch, **step))
    stream.sink(StoreSink(data=str(data)), num_cpus=EDGE_CPUS)
    return flow


def video_ingest_flow(
    video: str | Path,
    data: str | Path,
    *,
    featurizer: Featurizer = "models",
    every: int = 1,
    fps: float | None = None,
    keyframes_only: bool = False,
    start: float = 0.0,
    end: float | None = None,
    replicas: int | None = None,
    cpus: float = 2.0,
    gpus: float = 0.0,
    max_batch: int = 16,
) -> Dataflow:
    """A video file -> :func:`ingest_flow`. Every frame by default; the options sample."""
    source = VideoFileSource(path=str(video), every=every, fps=fps, keyframes_only=keyframes_only,
                             start=start, end=end)
    return ingest_flow(source, data, featurizer=featurizer, replicas=replicas, cpus=cpus, gpus=gpus, max_batch=max_batch,
                       name=f"ingest:{Path(video).name}")
