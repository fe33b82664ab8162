"""The ready-made pipelines behind ``streamvision ingest`` and ``streamvision demo``.

Two featurizer chains, both ending in the store (RocksDB lineage + FAISS):

* ``"models"`` (the default): NanoDet-m finds COCO objects, the tracker gives people and
  vehicles a per-camera ``track_id``, EfficientNet-Lite0 embeds every detected crop and every
  whole frame (1280-d, L2-normalized);
* ``"histogram"``: DeepLens' colour histograms of whole frames (no model, fast).
"""

from __future__ import annotations

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


def ingest_flow(source: Source, data: str | Path, *, featurizer: Featurizer = "models", replicas: int = 1,
                max_batch: int = 16, name: str = "ingest") -> Dataflow:
    """``source`` -> patches -> features -> store in ``data``.

    ``replicas`` actors per featurizing step share the work; CPU reservations are sized so
    that the whole graph fits a 2-CPU machine with one replica each.
    """
    flow = Dataflow(name)
    stream = flow.source(source, max_batch=max_batch, num_cpus=0.25)
    if featurizer == "histogram":
        cpus = 1.5 / replicas
        stream = (stream.then(registry.build("whole_frame", {}), replicas=replicas, num_cpus=cpus)
                        .then(registry.build("color_histogram", {}), replicas=replicas, num_cpus=cpus))
    elif featurizer == "models":
        cpus = 0.75 / replicas
        stream = (stream.then(registry.build("nanodet", {"whole_frames": True}), replicas=replicas, num_cpus=cpus,
                              max_batch=max_batch)
                        .then(registry.build("tracker", {}), replicas=1, num_cpus=cpus if replicas == 1 else 0.0,
                              max_batch=max_batch)
                        .then(registry.build("efficientnet_lite0", {}), replicas=replicas, num_cpus=cpus,
                              max_batch=4 * max_batch))
    else:
        raise ConfigError(f"unknown featurizer {featurizer!r}; choose one of {FEATURIZERS}")
    stream.sink(StoreSink(data=str(data)), num_cpus=0.25)
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
    replicas: int = 1,
    max_batch: int = 16,
) -> Dataflow:
    """A video file -> :func:`ingest_flow`. Every frame by default; the options sample."""
    source = VideoFileSource(path=str(video), every=every, fps=fps, keyframes_only=keyframes_only,
                             start=start, end=end)
    return ingest_flow(source, data, featurizer=featurizer, replicas=replicas, max_batch=max_batch,
                       name=f"ingest:{Path(video).name}")
