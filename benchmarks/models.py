"""Model throughput and the default pipeline three ways, on the real vtest.avi.

    python benchmarks/models.py --out DIR [--frames 240] [--rounds 2] [--quick]

Measures, in one run:

* NanoDet-m frames/s per core (batch-size sweep at 1 thread, thread sweep at the best batch),
  HOG people frames/s per core (2x upscale), EfficientNet-Lite0 patches/s per core (batch and
  thread sweeps, on NanoDet's real crops);
* the default pipeline, decode -> NanoDet-m (+ whole frames) -> EfficientNet-Lite0 -> store
  (FAISS index + RocksDB lineage), on the first ``--frames`` frames of vtest.avi:
  as the StreamVision actor dataflow, as one plain Python loop, and as Ray Data
  ``map_batches``, side by side. Each is timed end to end (process / actor start and model
  loading included), so use enough frames (``--frames 795`` is the whole video) for the
  start-up to amortize. The three run in turn, ``--rounds`` times; each one's fastest round
  (the least disturbed by other load on a shared machine) gives the headline figures, and
  every round is in the JSON.

Writes ``DIR/models.json`` (keys ``detector_fps_per_core``, ``featurizer_patches_per_s_per_core``,
``pipeline_fps``, ``ratio_vs_plain_loop``, ``ratio_vs_ray_data`` and the sweeps) and
``DIR/models.png``. CPU figures on a shared machine are noisy; compare the ratios.
"""

from __future__ import annotations

import streamvision

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from operators.base import OperatorContext
from operators.detectors.hog import HOGPeopleDetector
from operators.detectors.nanodet import NanoDetDetector
from operators.featurizers.efficientnet import EfficientNetLite0Featurizer
from operators.sinks.store_sink import StoreSink
from operators.sources.video_file import VideoFileSource
from operators.assets import vtest_video
from streamvision.core.frames import FrameBatch
from streamvision.core.patches import PatchBatch
from streamvision.core.types import PatchType

VTEST_FPS = 10.0
#: Frames per batch from the source: 4 rather than 8 halves the end of a run where one replica
#: works on the last batch and the other has nothing left (4.0 vs 3.8 frames/s on 150 frames).
FRAME_BATCH = 4
#: EfficientNet-Lite0 on ~11 patches a frame is most of the work: both contenders get two actors for it.
#: The model stages run data-parallel: MODEL_REPLICAS actors per stage, one torch thread each
#: (intra-op threads stall at every barrier when other processes share the cores). In the
#: dataflow NanoDet and EfficientNet-Lite0 ask for the same resources, so the planner fuses
#: them (each replica runs both); Ray Data runs them as two actor pools of the same size.
MODEL_REPLICAS = 2
MODEL_THREADS = 1


def best_of(fn: Callable[[], Any], repeats: int) -> float:
    """Fastest wall time of ``repeats`` calls of ``fn`` (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def decode(path: str, frames: int, batch: int) -> list[FrameBatch]:
    """The first ``frames`` frames of ``path`` in batches of ``batch``."""
    source = VideoFileSource(path=path, end=frames / VTEST_FPS)
    source.open()
    try:
        return list(source.read(batch))
    finally:
        source.close()


def detector_sweep(images: FrameBatch, batch_sizes: list[int], threads: list[int], repeats: int) -> dict[str, Any]:
    """NanoDet-m frames/s for each batch size (1 thread) and each thread count (best batch)."""
    detector = NanoDetDetector(score_threshold=0.35)
    detector.setup(OperatorContext(num_threads=1))
    by_batch = {}
    for b in batch_sizes:
        sub = _frames(images, b)
        by_batch[b] = b / best_of(lambda: detector.process(sub), repeats)
    best_batch = max(by_batch, key=by_batch.get)  # type: ignore[arg-type]
    by_threads = {}
    sub = _frames(images, best_batch)
    for t in threads:
        torch.set_num_threads(t)
        by_threads[t] = best_batch / best_of(lambda: detector.process(sub), repeats)
    torch.set_num_threads(1)
    return {"fps_by_batch_1_thread": by_batch, "best_batch": best_batch, "fps_by_threads": by_threads,
            "fps_per_core": max(by_batch.values())}


def hog_fps_per_core(images: FrameBatch, repeats: int) -> float:
    """HOG people frames/s on one thread (frames upscaled 2x)."""
    hog = HOGPeopleDetector(upscale=2.0)
    hog.setup(OperatorContext(num_threads=1))
    sub = _frames(images, 2)
    return 2 / best_of(lambda: hog.process(sub), max(1, repeats - 1))


def featurizer_sweep(patches: PatchBatch, batch_sizes: list[int], threads: list[int], repeats: int) -> dict[str, Any]:
    """EfficientNet-Lite0 patches/s for each batch size (1 thread) and each thread count."""
    featurizer = EfficientNetLite0Featurizer(top_k=5)
    featurizer.setup(OperatorContext(num_threads=1))
    by_batch = {}
    for b in batch_sizes:
        sub = patches.take(np.arange(b) % len(patches))
        by_batch[b] = b / best_of(lambda: featurizer.process(sub), repeats)
    best_batch = max(by_batch, key=by_batch.get)  # type: ignore[arg-type]
    by_threads = {}
    sub = patches.take(np.arange(best_batch) % len(patches))
    for t in threads:
        torch.set_num_threads(t)
        by_threads[t] = best_batch / best_of(lambda: featurizer.process(sub), repeats)
    torch.set_num_threads(1)
    return {"patches_per_s_by_batch_1_thread": by_batch, "best_batch": best_batch,
            "patches_per_s_by_threads": by_threads, "patches_per_s_per_core": max(by_batch.values())}


def _frames(batches: FrameBatch, n: int) -> FrameBatch:
    idx = np.arange(n) % len(batches)
    return FrameBatch(keys=[batches.keys[i] for i in idx], cameras=[batches.cameras[i] for i in idx],
                      frame_no=batches.frame_no[idx], pts=batches.pts[idx], wall_time=batches.wall_time[idx],
                      images=batches.images[idx])


def _sink(data: Path, featurizer: EfficientNetLite0Featurizer) -> StoreSink:
    sink = StoreSink(data=str(data))
    sink.bind(PatchType(kind="vector", dim=1280), featurizer.spec())
    sink.open()
    return sink


def plain_loop(path: str, frames: int, data: Path, threads: int) -> dict[str, Any]:
    """The default pipeline as one Python loop in this process (torch on ``threads`` threads)."""
    started = time.perf_counter()
    detector = NanoDetDetector(whole_frames=True)
    featurizer = EfficientNetLite0Featurizer()
    context = OperatorContext(num_threads=threads)
    detector.setup(context)
    featurizer.setup(context)
    sink = _sink(data, featurizer)
    source = VideoFileSource(path=path, end=frames / VTEST_FPS)
    n = written = 0
    source.open()
    first: tuple[float, int] | None = None
    for batch in source.read(FRAME_BATCH):
        written += sink.write(featurizer.process(detector.process(batch)))
        n += len(batch)
        first = first or (time.perf_counter(), n)
    source.close()
    sink.close()
    return _timing(started, first, n, written)


def _timing(started: float, first: tuple[float, int] | None, frames: int, patches: int) -> dict[str, Any]:
    """End-to-end fps (set-up and model loading included) and steady fps (after the first batch out)."""
    ended = time.perf_counter()
    result = {"frames": frames, "patches": patches, "seconds": ended - started, "fps": frames / (ended - started)}
    if first is not None and frames > first[1] and ended > first[0]:
        result["steady_fps"] = (frames - first[1]) / (ended - first[0])
    return result


def actor_dataflow(path: str, frames: int, data: Path) -> dict[str, Any]:
    """The default pipeline as the StreamVision actor dataflow (NanoDet on 1 thread, EfficientNet-Lite0 on 2)."""
    from streamvision.plan.dataflow import Dataflow

    started = time.perf_counter()
    flow = Dataflow("models-benchmark")
    (flow.source(VideoFileSource(path=path, end=frames / VTEST_FPS), max_batch=FRAME_BATCH)
         .then(NanoDetDetector(whole_frames=True), replicas=MODEL_REPLICAS, num_cpus=MODEL_THREADS,
               max_batch=FRAME_BATCH)
         .then(EfficientNetLite0Featurizer(), replicas=MODEL_REPLICAS, num_cpus=MODEL_THREADS, max_batch=FRAME_BATCH)
         .sink(StoreSink(data=str(data))))
    report = streamvision.run(flow)
    result = _timing(started, None, report.frames, report.written)
    result["runtime_reported_fps"] = report.fps
    return result


class _Decode:
    """Ray Data stage: a segment ``[start, end)`` of the video -> frame batches (one per row)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = []
        for start, end in zip(rows["start"], rows["end"]):
            source = VideoFileSource(path=self.path, start=float(start), end=float(end), verify=False)
            source.open()
            out += list(source.read(FRAME_BATCH))
            source.close()
        return {"batch": _objects(out)}


class _Apply:
    """Ray Data stage: one StreamVision operator applied to each batch object."""

    def __init__(self, make: Callable[[], Any], threads: int = 1) -> None:
        self.op = make()
        self.op.setup(OperatorContext(num_threads=threads))

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"batch": _objects([self.op.process(b) for b in rows["batch"]])}


def _objects(items: list[Any]) -> np.ndarray:
    column = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        column[i] = item
    return column


def ray_data(path: str, frames: int, data: Path) -> dict[str, Any]:
    """The default pipeline with Ray Data ``map_batches`` (actor pools sized as the dataflow's)."""
    import ray.data

    seconds = frames / VTEST_FPS
    step = FRAME_BATCH / VTEST_FPS
    segments = [{"start": s, "end": min(s + step, seconds)} for s in np.arange(0, seconds, step)]
    started = time.perf_counter()
    sink = _sink(data, EfficientNetLite0Featurizer())
    ds = (ray.data.from_items(segments, override_num_blocks=len(segments))
          .map_batches(_Decode, fn_constructor_kwargs={"path": path}, batch_size=1, concurrency=1, num_cpus=0.5)
          .map_batches(_Apply, fn_constructor_kwargs={"make": lambda: NanoDetDetector(whole_frames=True),
                                                      "threads": MODEL_THREADS},
                       batch_size=1, concurrency=MODEL_REPLICAS, num_cpus=MODEL_THREADS)
          .map_batches(_Apply, fn_constructor_kwargs={"make": EfficientNetLite0Featurizer,
                                                      "threads": MODEL_THREADS},
                       batch_size=1, concurrency=MODEL_REPLICAS, num_cpus=MODEL_THREADS))
    n = written = 0
    first: tuple[float, int] | None = None
    for rows in ds.iter_batches(batch_size=1, batch_format="numpy"):
        for batch in rows["batch"]:
            written += sink.write(batch)
            n += len(set(batch.frame_keys))
            first = first or (time.perf_counter(), n)
    sink.close()
    return _timing(started, first, n, written)


def plot(result: dict[str, Any], path: Path) -> None:
    """Three panels: detector and featurizer sweeps, and the pipeline side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    det, feat = result["detector"], result["featurizer"]
    ax = axes[0]
    ax.plot(list(det["fps_by_batch_1_thread"]), list(det["fps_by_batch_1_thread"].values()), "o-", label="NanoDet-m, 1 thread")
    ax.plot(list(det["fps_by_threads"]), list(det["fps_by_threads"].values()), "s--", label=f"NanoDet-m, batch {det['best_batch']}, x = threads")
    ax.axhline(result["hog_fps_per_core"], color="grey", ls=":", label="HOG people (2x), 1 thread")
    ax.set(xlabel="batch size / threads", ylabel="frames/s", title="detectors")
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.plot(list(feat["patches_per_s_by_batch_1_thread"]), list(feat["patches_per_s_by_batch_1_thread"].values()), "o-", label="1 thread")
    ax.plot(list(feat["patches_per_s_by_threads"]), list(feat["patches_per_s_by_threads"].values()), "s--", label=f"batch {feat['best_batch']}, x = threads")
    ax.set(xlabel="batch size / threads", ylabel="patches/s", title="EfficientNet-Lite0")
    ax.legend(fontsize=8)
    ax = axes[2]
    names = ["actor dataflow", "plain loop", "Ray Data"]
    values = [result["pipeline"][k]["fps"] for k in ("dataflow", "plain_loop", "ray_data")]
    ax.bar(names, values, color=["tab:blue", "tab:grey", "tab:orange"])
    rounds = len(result["pipeline_rounds"]["dataflow"])
    ax.set(ylabel="frames/s", title=f"default pipeline, {result['frames']} vtest.avi frames, best of {rounds} rounds")
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:.2f}", ha="center", va="bottom")
    fig.suptitle(f"StreamVision models on {result['device']} ({result['cpus']} CPUs)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    """Run every measurement and write ``models.json`` and ``models.png``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=240, help="vtest.avi frames through the pipeline")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each pipeline, in turn; the fastest counts")
    parser.add_argument("--quick", action="store_true", help="smaller sweeps (smoke test)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cpus = os.cpu_count() or 1
    repeats = 1 if args.quick else 3
    path = str(vtest_video())
    torch.set_num_threads(1)

    sample = decode(path, 16, 16)[0]
    detector = detector_sweep(sample, [1, 4] if args.quick else [1, 2, 4, 8], sorted({1, cpus}), repeats)
    crops = NanoDetDetector()
    crops.setup(OperatorContext(num_threads=1))
    patches = PatchBatch.concat([crops.process(_frames(sample, 8))])
    featurizer = featurizer_sweep(patches, [1, 8] if args.quick else [1, 4, 16, 32], sorted({1, cpus}), repeats)
    hog = hog_fps_per_core(sample, repeats)

    import ray

    from cluster.local import ensure_ray

    load_before = os.getloadavg()[0]
    ensure_ray(num_cpus=max(4, cpus))
    rounds: dict[str, list[dict[str, Any]]] = {"plain_loop": [], "dataflow": [], "ray_data": []}
    for r in range(1 if args.quick else args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            rounds["plain_loop"].append(plain_loop(path, args.frames, Path(tmp) / "plain", threads=min(2, cpus)))
            rounds["dataflow"].append(actor_dataflow(path, args.frames, Path(tmp) / "dataflow"))
            rounds["ray_data"].append(ray_data(path, args.frames, Path(tmp) / "ray_data"))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]['fps']:.2f} fps" for k, v in rounds.items()), flush=True)
    ray.shutdown()
    plain, flow, rdata = (max(rounds[k], key=lambda run: run["fps"]) for k in ("plain_loop", "dataflow", "ray_data"))

    result = {
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "cpus": cpus,
        "frames": args.frames,
        "detector_fps_per_core": detector["fps_per_core"],
        "hog_fps_per_core": hog,
        "featurizer_patches_per_s_per_core": featurizer["patches_per_s_per_core"],
        "pipeline_fps": flow["fps"],
        "ratio_vs_plain_loop": flow["fps"] / plain["fps"],
        "ratio_vs_ray_data": flow["fps"] / rdata["fps"],
        "detector": detector,
        "featurizer": featurizer,
        "pipeline": {"dataflow": flow, "plain_loop": plain, "ray_data": rdata},
        "pipeline_rounds": rounds,
        "loadavg_1min": {"before_pipelines": load_before, "after": os.getloadavg()[0]},
        "notes": "pipeline fps are end to end, the fastest of the rounds of each: wall time of the whole call, "
                 "actor start and model loading included (torch is already imported in the plain loop's process) (the runtime's own figure, from after actor creation, is runtime_reported_fps); "
                 "steady_fps counts only frames after the first batch is written. plain loop: one process, torch on min(2, cpus) threads; dataflow and Ray Data: one actor for "
                 "decode; dataflow: NanoDet and EfficientNet-Lite0 fused (same resources), MODEL_REPLICAS actors of "
                 "MODEL_THREADS torch thread; Ray Data: MODEL_REPLICAS actors per model stage, MODEL_THREADS "
                 "torch thread each; "
                 "same source, operators and store sink.",
    }
    (args.out / "models.json").write_text(json.dumps(result, indent=2, default=str))
    plot(result, args.out / "models.png")
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, dict)}, indent=2))


if __name__ == "__main__":
    main()
