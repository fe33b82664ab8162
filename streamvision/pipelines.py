"""The ready-made pipelines behind ``streamvision ingest`` and ``streamvision demo``."""

from __future__ import annotations

from pathlib import Path

from operators.featurizers.color_histogram import ColorHistogram
from operators.patches.whole_frame import WholeFramePatches
from operators.sinks.store_sink import StoreSink
from operators.sources.video_file import VideoFileSource
from streamvision.dataflow import Dataflow


def video_ingest_flow(
    video: str | Path,
    data: str | Path,
    *,
    every: int = 1,
    fps: float | None = None,
    keyframes_only: bool = False,
    start: float = 0.0,
    end: float | None = None,
    replicas: int = 1,
    max_batch: int = 16,
    bins: int = 8,
    grid: int = 2,
) -> Dataflow:
    """Video file -> whole-frame patches -> colour histograms -> RocksDB + FAISS in ``data``.

    Every frame by default; ``every`` / ``fps`` / ``keyframes_only`` / ``start`` / ``end``
    sample. ``replicas`` featurizer actors share the work.
    """
    flow = Dataflow(f"ingest:{Path(video).name}")
    cpus = 1.0 if replicas == 1 else 1.0 / replicas
    (
        flow.source(VideoFileSource(path=str(video), every=every, fps=fps, keyframes_only=keyframes_only,
                                    start=start, end=end), max_batch=max_batch)
        .then(WholeFramePatches(), replicas=replicas, num_cpus=cpus)
        .then(ColorHistogram(bins=bins, grid=grid), replicas=replicas, num_cpus=cpus)
        .sink(StoreSink(data=str(data)))
    )
    return flow
