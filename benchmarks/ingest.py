"""Kafka ingest: produce -> indexed patches through the actor dataflow, on the real embedded broker.

Three phases in one run, on real vtest.avi frames sent as JPEG messages:

1. **max rate**: a backlog of ``--backlog`` messages from ``--cameras`` cameras is read to its
   end by the dataflow (KafkaSource -> whole-frame patches -> colour histograms -> RocksDB +
   FAISS); ``fps`` = frames / seconds.
2. **plain loop**: one kafka-python consumer in this process decodes, featurizes and writes
   the same messages with the same operators; ``ratio_vs_plain_loop`` = dataflow fps / loop fps.
3. **fixed rate**: ``--cameras`` cameras at ``--rate`` frames/s each for ``--duration`` seconds
   (paced producer thread; ``sv-ts`` = capture time); latency = time the patch is durably
   written (queryable) minus capture time, p50 / p99; every actor's RSS is sampled, and
   ``rss_growth_mb`` is the largest growth of any actor after the first 10 % of the phase.

    python benchmarks/ingest.py --out out/ --duration 600

writes ``out/ingest.json`` and ``out/ingest.png`` (latency over time, RSS over time).
"""

from __future__ import annotations

import streamvision

import argparse
import json
import os
import platform
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402

from cluster.broker import EmbeddedBroker  # noqa: E402
from operators.featurizers.color_histogram import ColorHistogram  # noqa: E402
from operators.kafka.settings import KafkaSettings, ensure_topic  # noqa: E402
from operators.patches.whole_frame import WholeFramePatches  # noqa: E402
from operators.producers import FrameProducer  # noqa: E402
from operators.producers.frame_reader import FrameReader  # noqa: E402
from operators.sinks.store_sink import StoreSink  # noqa: E402
from operators.sources.kafka_source import KafkaSource  # noqa: E402
from operators.kafka import wire  # noqa: E402
from operators.assets import vtest_video  # noqa: E402
from streamvision.plan.dataflow import Dataflow  # noqa: E402
from streamvision.core.frames import FrameBatch  # noqa: E402
from streamvision.core.lineage import KafkaKey  # noqa: E402
from streamvision.core.patches import PatchBatch  # noqa: E402


#: The featurizer of every phase: a 4-level-per-channel joint RGB histogram on a 2 x 2 grid,
#: 256-d (1 KB per frame in the index; the default 8 levels make 2048-d, 8 KB per frame).
HISTOGRAM = {"bins": 4, "grid": 2}


class LatencyStoreSink(StoreSink):
    """The store sink, also noting when each patch became durable (queryable)."""

    name = "store"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._written_at: list[float] = []
        self._latency: list[float] = []

    def write(self, batch: PatchBatch) -> int:
        """Write, then record ``now - capture time`` per patch."""
        written = super().write(batch)
        now = time.time()
        self._written_at.extend([now] * len(batch))
        self._latency.extend((now - batch.wall_time).tolist())
        return written

    def stats(self) -> dict[str, Any]:
        """The store's stats plus the latency samples."""
        return {**super().stats(), "written_at": self._written_at, "latency_s": self._latency}


def _messages(frames: list[np.ndarray], cameras: int, count: int, quality: int) -> list[wire.WireMessage]:
    """``count`` JPEG messages, cameras interleaved, frame numbers rising per camera."""
    encoded = [wire.encode_pixels(f, wire.KIND_JPEG, quality) for f in frames]
    out = []
    for i in range(count):
        camera, n = i % cameras, i // cameras
        header = wire.Header(kind=wire.KIND_JPEG, camera=f"cam{camera}", ts=time.time(), frame0=n, pts=n / 10,
                             shape=frames[0].shape[:2], count=1)
        out.append(wire.WireMessage(header.camera.encode(), encoded[n % len(encoded)], header))
    return out


def _send(servers: str, topic: str, messages: list[wire.WireMessage]) -> None:
    with FrameProducer(servers, topic) as producer:
        for msg in messages:
            producer.send(msg)


def _flow(servers: str, topic: str, data: Path, until_end: bool, max_batch: int) -> Dataflow:
    flow = Dataflow(f"ingest-bench:{topic}")
    source = KafkaSource(topic=topic, bootstrap_servers=servers, group_id=f"bench-{topic}", until_end=until_end,
                         session_timeout_ms=6000, heartbeat_interval_ms=1000)
    (flow.source(source, max_batch=max_batch)
         .then(WholeFramePatches())
         .then(ColorHistogram(**HISTOGRAM))
         .sink(LatencyStoreSink(data=str(data))))
    return flow


def plain_loop_fps(servers: str, topic: str, expected: int, data: Path, max_batch: int) -> float:
    """Consume with kafka-python, decode, featurize and write the same messages in one loop."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False,
                             max_partition_fetch_bytes=16 * 1024 * 1024)
    parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    patches, features, sink = WholeFramePatches(), ColorHistogram(**HISTOGRAM), StoreSink(data=str(data))
    sink.open()
    frames, first_frames, started = 0, 0, 0.0
    while frames < expected:
        for tp, records in consumer.poll(timeout_ms=500, max_records=max_batch).items():
            decoded = [(r, wire.decode(r.value, r.headers)) for r in records]
            batch = FrameBatch(
                keys=[KafkaKey(r.topic, r.partition, r.offset, 0).encode() for r, _ in decoded],
                cameras=[d.header.camera for _, d in decoded],
                frame_no=np.concatenate([d.frame_no for _, d in decoded]),
                pts=np.concatenate([d.pts for _, d in decoded]),
                wall_time=np.concatenate([d.wall_time for _, d in decoded]),
                images=np.concatenate([d.images for _, d in decoded]),
                meta={"offset_ranges": [[tp.topic, tp.partition, records[0].offset, records[-1].offset, 0]]},
            )
            sink.write(features.process(patches.process(batch)))
            frames += len(batch)
            if not started:  # steady state: time from the first written batch, like sustained_fps
                started, first_frames = time.perf_counter(), frames
    elapsed = time.perf_counter() - started
    sink.close()
    consumer.close()
    return (frames - first_frames) / elapsed


def sustained_fps(written_at: list[float]) -> float:
    """Frames per second between the first and the last durable write (group join and actor start excluded)."""
    times = np.asarray(written_at)
    first = times == times.min()
    return float((~first).sum() / (times.max() - times.min()))


def _actor_rss() -> dict[int, float]:
    """RSS in MB of this process's Ray worker processes (the actors)."""
    out = {}
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.cmdline() and proc.cmdline()[0].startswith("ray::") and "Actor" in proc.cmdline()[0]:
                out[proc.pid] = proc.memory_info().rss / 1e6
        except psutil.Error:
            continue
    return out


def fixed_rate(servers: str, frames: list[np.ndarray], data: Path, cameras: int, rate: float, duration: float,
               quality: int, max_batch: int) -> dict[str, Any]:
    """Paced producer thread + continuous dataflow; returns latency and RSS samples."""
    topic = "bench-fixed"
    ensure_topic(KafkaSettings(servers), topic, partitions=max(1, cameras))
    encoded = [wire.encode_pixels(f, wire.KIND_JPEG, quality) for f in frames]
    go = threading.Event()
    sent = {"messages": 0, "clock": 0.0}

    def produce() -> None:
        with FrameProducer(servers, topic, linger_ms=0) as producer:
            for camera in range(cameras):  # warm-up: one frame per camera, until the group has formed
                header = wire.Header(kind=wire.KIND_JPEG, camera=f"cam{camera}", ts=time.time(), frame0=0,
                                     shape=frames[0].shape[:2], count=1)
                producer.send(wire.WireMessage(header.camera.encode(), encoded[0], header))
            producer.flush()
            go.wait()
            start = time.monotonic()
            sent["clock"] = time.time()
            tick = 1
            while time.monotonic() - start < duration:
                delay = start + tick / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                for camera in range(cameras):
                    header = wire.Header(kind=wire.KIND_JPEG, camera=f"cam{camera}", ts=time.time(), frame0=tick,
                                         pts=tick / rate, shape=frames[0].shape[:2], count=1)
                    producer.send(wire.WireMessage(header.camera.encode(), encoded[tick % len(encoded)], header))
                    sent["messages"] += 1
                tick += 1

    rss: list[tuple[float, dict[int, float]]] = []
    clock = {"go": 0.0}
    stopping = threading.Event()
    thread = threading.Thread(target=produce, daemon=True)
    thread.start()

    def progress(p: Any) -> None:
        if p.written >= cameras and not go.is_set():
            clock["go"] = time.monotonic()
            go.set()  # the pipeline is up and reading: start the offered-rate clock
        if go.is_set() and (not rss or time.monotonic() - clock["go"] - rss[-1][0] >= 2.0):
            rss.append((time.monotonic() - clock["go"], _actor_rss()))
        if go.is_set() and not thread.is_alive() and p.written >= sent["messages"] + cameras \
                and not stopping.is_set():
            stopping.set()
            os.kill(os.getpid(), signal.SIGINT)  # the runtime's Ctrl-C: stop reading, drain, close

    report = streamvision.run(_flow(servers, topic, data, until_end=False, max_batch=max_batch), progress=progress)
    thread.join(30)
    sink = next(iter(report.sinks.values()))
    written_at, latency = np.asarray(sink["written_at"]), np.asarray(sink["latency_s"])
    measured = written_at - latency >= sent["clock"] - 1e-3  # frames captured after the clock started
    return {"report": report, "sent": sent["messages"], "written_at": written_at[measured],
            "latency_s": latency[measured], "rss": rss}


def rss_growth(samples: list[tuple[float, dict[int, float]]], duration: float) -> float:
    """Largest RSS growth of any actor between the first sample after 10 % of the run and its last one."""
    warm = [s for t, s in samples if t >= 0.1 * duration] or [s for _, s in samples]
    if not warm:
        return float("nan")
    growth = 0.0
    for pid, first in warm[0].items():
        later = [s[pid] for s in warm if pid in s]
        growth = max(growth, later[-1] - first)
    return growth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="Directory for ingest.json and ingest.png.")
    parser.add_argument("--duration", type=float, default=600.0, help="Seconds of the fixed-rate phase.")
    parser.add_argument("--cameras", type=int, default=3, help="Cameras (one partition each).")
    parser.add_argument("--rate", type=float, default=10.0, help="Frames/s per camera in the fixed-rate phase.")
    parser.add_argument("--backlog", type=int, default=600, help="Messages for the max-rate phases.")
    parser.add_argument("--quality", type=int, default=85, help="JPEG quality.")
    parser.add_argument("--max-batch", type=int, default=16, help="Frames per source batch.")
    parser.add_argument("--bootstrap-servers", default=None, help="Use this Kafka instead of the embedded broker.")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    from cluster.local import ensure_ray

    ensure_ray()
    frames = [im for _, (im, _) in zip(range(200), FrameReader(str(vtest_video())))]
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(state_dir=Path(tmp) / "broker") as broker:
        servers = args.bootstrap_servers or broker.bootstrap_servers
        root = Path(tmp)
        ensure_topic(KafkaSettings(servers), "bench-max", partitions=args.cameras)
        _send(servers, "bench-max", _messages(frames, args.cameras, args.backlog, args.quality))
        maxed = streamvision.run(_flow(servers, "bench-max", root / "max", until_end=True, max_batch=args.max_batch))
        loop_fps = plain_loop_fps(servers, "bench-max", args.backlog, root / "loop", args.max_batch)
        fixed = fixed_rate(servers, frames, root / "fixed", args.cameras, args.rate, args.duration, args.quality,
                           args.max_batch)

    latency_ms = fixed["latency_s"] * 1000.0
    fps = sustained_fps(next(iter(maxed.sinks.values()))["written_at"])
    result = {
        "fps": fps,
        "latency_p50_ms": float(np.percentile(latency_ms, 50)) if len(latency_ms) else None,
        "latency_p99_ms": float(np.percentile(latency_ms, 99)) if len(latency_ms) else None,
        "ratio_vs_plain_loop": fps / loop_fps,
        "fps_including_startup": maxed.fps,
        "rss_growth_mb": rss_growth(fixed["rss"], args.duration),
        "index_mb_at_end": next(iter(fixed["report"].sinks.values()))["indexed"] * ColorHistogram(**HISTOGRAM).dim * 4 / 1e6,
        "featurizer": ColorHistogram(**HISTOGRAM).spec(),
        "plain_loop_fps": loop_fps,
        "max_rate_frames": maxed.frames,
        "fixed_rate": {"cameras": args.cameras, "fps_per_camera": args.rate, "duration_s": args.duration,
                       "sent": fixed["sent"], "written": int(len(latency_ms)),
                       "dead_letters": fixed["report"].sources.get("kafka", {}).get("dead_letters", 0)},
        "targets": {"latency_p99_ms": 1000, "ratio_vs_plain_loop": 0.9, "rss_growth_mb": 50},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "load_avg": os.getloadavg()},
    }
    (args.out / "ingest.json").write_text(json.dumps(result, indent=2))

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    if len(latency_ms):
        t = fixed["written_at"] - fixed["written_at"].min()
        ax1.plot(t, latency_ms, ".", ms=2, alpha=0.5, label="per patch")
        ax1.axhline(result["latency_p99_ms"], color="r", lw=1, label=f"p99 {result['latency_p99_ms']:.0f} ms")
        ax1.axhline(result["latency_p50_ms"], color="g", lw=1, label=f"p50 {result['latency_p50_ms']:.0f} ms")
    ax1.set_ylabel("capture -> queryable (ms)")
    ax1.set_title(f"Kafka ingest: {args.cameras} cameras x {args.rate:g} fps, max rate {fps:.1f} fps "
                  f"({result['ratio_vs_plain_loop']:.2f}x plain loop)")
    ax1.legend(loc="upper right")
    pids = sorted({pid for _, s in fixed["rss"] for pid in s})
    for pid in pids:
        pts = [(t, s[pid]) for t, s in fixed["rss"] if pid in s]
        ax2.plot([p[0] for p in pts], [p[1] for p in pts], label=f"actor {pid}")
    ax2.set_xlabel("seconds since the offered-rate clock started")
    ax2.set_ylabel("actor RSS (MB)")
    fig.tight_layout()
    fig.savefig(args.out / "ingest.png", dpi=120)
    print(json.dumps({k: result[k] for k in ("fps", "latency_p50_ms", "latency_p99_ms", "ratio_vs_plain_loop",
                                             "rss_growth_mb")}, indent=2))


if __name__ == "__main__":
    main()
