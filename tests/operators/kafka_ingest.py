"""Shared by the tests of kept pixels: a Kafka source read to its end into a store sink, in this process."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from operators.featurizers.color_histogram import ColorHistogram
from operators.patches.whole_frame import WholeFramePatches
from operators.sinks.store_sink import StoreSink
from operators.sources.kafka_source import KafkaSource


def ingest_whole_frames(source: KafkaSource, data: Path) -> dict[bytes, tuple[float, np.ndarray]]:
    """Whole-frame colour histograms of every frame ``source`` reads, stored in ``data``; the
    frames the source decoded, ``frame key -> (capture time, pixels)``."""
    whole, hist = WholeFramePatches(), ColorHistogram(bins=4, grid=2)
    sink = StoreSink(data=str(data), featurizer=hist.spec())
    decoded: dict[bytes, tuple[float, np.ndarray]] = {}
    source.open()
    source.seek({})
    for batch in source.read(8):
        decoded.update((k, (float(w), im.copy())) for k, w, im in zip(batch.keys, batch.wall_time, batch.images))
        sink.write(hist.process(whole.process(batch)))
    source.close()
    sink.close()  # the segmenter finishes the segments handed to it
    return decoded
