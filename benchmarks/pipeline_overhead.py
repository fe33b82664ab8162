"""Frames/s of the actor dataflow vs the same operators in one plain Python loop.

Same real video (vtest.avi, every frame), same operators (PyAV decode -> whole-frame
patches -> colour histograms -> RocksDB + FAISS store), same machine, one run, the
contenders alternating ``--repeats`` times (medians reported). The dataflow is also run
with 1..``--max-replicas`` featurizer replicas for the frames/s-vs-replicas plot.

    python benchmarks/pipeline_overhead.py --out out/

writes ``out/pipeline_overhead.json`` (``dataflow_fps``, ``plain_loop_fps``, ``ratio``,
``by_replicas``, machine facts) and ``out/pipeline_overhead.png``.
"""

from __future__ import annotations

import streamvision

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from operators.featurizers.color_histogram import ColorHistogram  # noqa: E402
from operators.patches.whole_frame import WholeFramePatches  # noqa: E402
from operators.sinks.store_sink import StoreSink  # noqa: E402
from operators.sources.video_file import VideoFileSource  # noqa: E402
from operators.assets import vtest_video  # noqa: E402
from streamvision.plan.pipelines import video_ingest_flow  # noqa: E402


def plain_loop_fps(video: Path, data: Path, max_batch: int) -> float:
    """The same operators called one after the other in this process."""
    source = VideoFileSource(path=str(video))
    patches, features = WholeFramePatches(), ColorHistogram()
    sink = StoreSink(data=str(data))
    source.open()
    sink.open()
    started = time.perf_counter()
    frames = 0
    for batch in source.read(max_batch):
        sink.write(features.process(patches.process(batch)))
        frames += len(batch)
    elapsed = time.perf_counter() - started
    sink.close()
    source.close()
    return frames / elapsed


def dataflow_fps(video: Path, data: Path, max_batch: int, replicas: int) -> float:
    """The pipeline as Ray actors (timed from the first pull, actors already up)."""
    report = streamvision.run(video_ingest_flow(video, data, featurizer="histogram", replicas=replicas, max_batch=max_batch))
    return report.fps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-replicas", type=int, default=2)
    parser.add_argument("--max-batch", type=int, default=16)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    import ray

    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    video = vtest_video()
    work = Path(tempfile.mkdtemp(prefix="sv-bench-"))
    loop, flows = [], {r: [] for r in range(1, args.max_replicas + 1)}
    try:
        dataflow_fps(video, work / "warmup", args.max_batch, 1)  # imports and worker pool warm
        for i in range(args.repeats):
            loop.append(plain_loop_fps(video, work / f"loop{i}", args.max_batch))
            for r in flows:
                flows[r].append(dataflow_fps(video, work / f"flow{r}-{i}", args.max_batch, r))
            print(f"repeat {i}: plain {loop[-1]:.0f} fps, dataflow "
                  + ", ".join(f"r={r}: {v[-1]:.0f}" for r, v in flows.items()), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        ray.shutdown()

    by_replicas = {r: statistics.median(v) for r, v in flows.items()}
    result = {
        "dataflow_fps": by_replicas[1],
        "plain_loop_fps": statistics.median(loop),
        "ratio": by_replicas[1] / statistics.median(loop),
        "best_dataflow_fps": max(by_replicas.values()),
        "best_ratio": max(by_replicas.values()) / statistics.median(loop),
        "by_replicas": by_replicas,
        "runs": {"plain_loop": loop, "dataflow": flows},
        "video": "vtest.avi (768x576, 795 frames, every frame)",
        "pipeline": "PyAV decode -> whole_frame -> color_histogram(8 bins, 2x2) -> RocksDB + FAISS Flat",
        "max_batch": args.max_batch,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    (args.out / "pipeline_overhead.json").write_text(json.dumps(result, indent=2))

    fig, ax = plt.subplots(figsize=(6, 4))
    reps = list(by_replicas)
    ax.plot(reps, [by_replicas[r] for r in reps], "o-", label="actor dataflow")
    ax.axhline(result["plain_loop_fps"], color="gray", linestyle="--", label="plain Python loop")
    ax.set_xlabel("featurizer replicas")
    ax.set_ylabel("frames / s")
    ax.set_xticks(reps)
    ax.set_ylim(bottom=0)
    ax.set_title(f"vtest.avi ingest, {os.cpu_count()} CPUs: ratio {result['ratio']:.2f}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "pipeline_overhead.png", dpi=120)
    print(json.dumps({k: result[k] for k in ("dataflow_fps", "plain_loop_fps", "ratio", "best_ratio")}, indent=2))


if __name__ == "__main__":
    main()
