"""The live service: real-time answers over cameras that are still streaming, on a 1 M collection.

One run, on this machine, every part real (local Ray, Ray Serve, the embedded broker, RocksDB,
FAISS, vtest.avi):

1. **bulk import**: ``--vectors`` colour histograms (the live pipeline's featurizer, 4 levels
   x 2 x 2 grid = 256-d) of random crops of vtest.avi frames are imported into a served
   collection through the service's writer (``bulk_import_vectors_per_s``);
2. **backlog**: a ``--backlog``-message backlog of real JPEG frames (mirrored: the live phase's
   frames must have no copies in the collection) is ingested at full speed
   by the Kafka dataflow into an empty served collection and into the full one, in
   ``--backlog-rounds`` alternating pairs (``ingest_fps_full_vs_empty``, the median pair's
   ratio of frames/s from each run's first frame read; the empty one holds a few thousand
   vectors by the last round; cost that grows with the collection shows here);
3. **live**: ``--cameras`` cameras at ``--rate`` frames/s of real JPEG frames go through the
   broker into the full collection while clients ask over HTTP: a prober asks ten times a
   second (at jittered intervals, out of phase with the cameras) for the produced frames not
   yet answered, each with its own vector (up to ``PROBE_BATCH`` in one batched request),
   until the frame is its top hit (``answerable_p50_ms`` / ``_p99_ms``: capture time to that
   answer, to within the prober's 0.05-0.15 s), and a querier in a process of its own asks
   top-10 queries five times a second (``query_p50_ms`` / ``_p99_ms``); the RSS of every actor
   and of the writers' clip encoder processes is sampled (``rss_growth_mb``: the largest growth
   of any of them after the first 10 % of the phase);
4. **restart**: the service is stopped (snapshots written) and ``streamvision serve`` started
   again as a new process, its own local Ray included: ``restart_to_first_answer_s`` (median of
   ``--restarts`` runs, each after the previous Ray's processes exited); and the same on a
   running Ray cluster (``ray start --head``, then ``serve --address``, as on KubeRay):
   ``service_restart_on_cluster_s`` (the cluster's first service leaves Serve's controller
   running, as ``serve run`` does, and each restart deploys its front end on it). Each cold
   restart is followed by a cold start of Ray Serve's hello world on the same local Ray settings
   (``benchmarks/serve_hello.py``, no StreamVision code): ``serve_hello_cold_s``, what Ray and
   Ray Serve alone take to answer on this machine.

    python benchmarks/live.py --out out/

writes ``out/live.json`` and ``out/live.png``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import httpx  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402

import streamvision  # noqa: E402
from cluster.broker import EmbeddedBroker  # noqa: E402
from cluster.local import ensure_ray  # noqa: E402
from cluster.service.server import start_service  # noqa: E402
from operators.assets import cache_dir, vtest_video  # noqa: E402
from operators.featurizers.color_histogram import ColorHistogram  # noqa: E402
from operators.kafka import wire  # noqa: E402
from operators.kafka.settings import KafkaSettings, ensure_topic  # noqa: E402
from operators.patches.whole_frame import WholeFramePatches  # noqa: E402
from operators.producers import FrameProducer  # noqa: E402
from operators.producers.frame_reader import FrameReader  # noqa: E402
from operators.sinks.store_sink import StoreSink  # noqa: E402
from operators.sources.image_folder import decode_image  # noqa: E402
from operators.sources.kafka_source import KafkaSource  # noqa: E402
from streamvision.api.client import ServiceClient  # noqa: E402
from streamvision.api.importer import import_embeddings  # noqa: E402
from streamvision.plan.dataflow import Dataflow  # noqa: E402

HISTOGRAM = {"bins": 4, "grid": 2}
GROUP_TIMING = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}
QUALITY = 85
#: Frames the prober asks about in one batched request (a few: the querier shares the shards).
PROBE_BATCH = 8
#: Mean seconds between the prober's requests. The load is open-loop, as a dashboard polls: a
#: prober asking again as soon as it is answered (this benchmark's first design) puts on a faster
#: service more load, and on this 2-core machine took as much CPU as the cameras' ingest.
PROBE_PERIOD_S = 0.1
#: Each interval is the period times a uniform draw from this range: a fixed 0.1 s period kept
#: one phase to the cameras' 10 frames/s for a whole run, and its wait for the next probe (0 to
#: 0.1 s) with it (answerable p50 79 and 152 ms in two runs of the same code).
PROBE_JITTER = (0.5, 1.5)
REPO = Path(__file__).resolve().parents[1]


def mirrored_jpeg(image: np.ndarray) -> bytes:
    """``image`` flipped left to right, as a JPEG message payload: a real frame whose vector is not
    the original's (a copy would tie with the original's top hits)."""
    return wire.encode_pixels(np.ascontiguousarray(image[:, ::-1]), wire.KIND_JPEG, QUALITY)


def preload_vectors(frames: list[np.ndarray], n: int, seed: int = 0) -> Path:
    """``n`` histograms of random crops (24..192 px squares) of the frames, cached as .npy."""
    path = cache_dir() / "bench" / f"live-crops-{n}-seed{seed}-b{HISTOGRAM['bins']}g{HISTOGRAM['grid']}.npy"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    op = ColorHistogram(**HISTOGRAM)
    out = np.lib.format.open_memmap(str(path) + ".tmp.npy", mode="w+", dtype=np.float32, shape=(n, op.dim))
    h, w = frames[0].shape[:2]
    for start in range(0, n, 10_000):
        m = min(10_000, n - start)
        sizes = rng.integers(24, 192, m)
        ys, xs = rng.integers(0, h - sizes), rng.integers(0, w - sizes)
        which = rng.integers(0, len(frames), m)
        out[start:start + m] = op.featurize([frames[f][y:y + s, x:x + s] for f, y, x, s in zip(which, ys, xs, sizes)])
    out.flush()
    del out
    Path(str(path) + ".tmp.npy").replace(path)
    return path


def _flow(servers: str, topic: str, data: Path, group: str, until_end: bool) -> Dataflow:
    flow = Dataflow(f"live:{topic}")
    source = KafkaSource(topic=topic, bootstrap_servers=servers, group_id=group, until_end=until_end, **GROUP_TIMING)
    (flow.source(source, num_cpus=0.25, max_batch=8)
         .then(WholeFramePatches(), num_cpus=0.5)
         .then(ColorHistogram(**HISTOGRAM), num_cpus=0.5)
         .sink(StoreSink(data=str(data)), num_cpus=0.25))
    return flow


def backlog(servers: str, jpegs: list[bytes], shape: tuple[int, int], data: Path, topic: str, messages: int,
            cameras: int) -> tuple[float, float]:
    """Frames/s of the dataflow reading a ``messages`` backlog to its end into ``data``, from its
    first frame read; and the seconds before that frame (actor starts, the consumer group's join:
    the embedded broker completes a join in 5 s steps, whatever the collection)."""
    ensure_topic(KafkaSettings(servers), topic, partitions=cameras)
    with FrameProducer(servers, topic) as producer:
        for i in range(messages):
            cam = i % cameras
            at = (i // cameras) / 10  # each camera at 10 frames/s: compaction gets 10 s segments
            header = wire.Header(kind=wire.KIND_JPEG, camera=f"cam{cam}", ts=1000.0 + at, frame0=i // cameras, pts=at,
                                 shape=shape, count=1)
            producer.send(wire.WireMessage(header.camera.encode(), jpegs[(cam * 265 + i // cameras) % len(jpegs)],
                                           header))
    first: list[Any] = []  # the first progress report with frames read (one each 0.5 s)
    report = streamvision.run(_flow(servers, topic, data, f"g-{topic}", until_end=True),
                              progress=lambda p: None if first or not p.frames else first.append(p))
    return (report.frames - first[0].frames) / (report.elapsed_s - first[0].elapsed_s), first[0].elapsed_s


def backlogs(servers: str, jpegs: list[bytes], shape: tuple[int, int], collections: dict[str, Path], messages: int,
             cameras: int, rounds: int) -> dict[str, Any]:
    """``ingest_fps_full_vs_empty``: the median over ``rounds`` of full/empty backlog frames/s,
    measured back to back in alternating order (empty, full; full, empty; ...), so that the
    machine's own drift over minutes cancels out instead of landing on one side."""
    fps: dict[str, list[float]] = {"empty": [], "full": []}
    waits: dict[str, list[float]] = {"empty": [], "full": []}
    for r in range(rounds):
        for name in (("empty", "full") if r % 2 == 0 else ("full", "empty")):
            rate, wait = backlog(servers, jpegs, shape, collections[name], f"backlog-{name}-{r}", messages, cameras)
            fps[name].append(rate)
            waits[name].append(wait)
        print(f"backlog round {r}: fps empty {fps['empty'][-1]:.1f} full {fps['full'][-1]:.1f} (first frame after "
              f"{waits['empty'][-1]:.1f} / {waits['full'][-1]:.1f} s)", flush=True)
    ratios = [f / e for f, e in zip(fps["full"], fps["empty"])]
    return {"ingest_fps_empty": float(np.median(fps["empty"])), "ingest_fps_full": float(np.median(fps["full"])),
            "ingest_fps_full_vs_empty": float(np.median(ratios)), "ingest_fps_empty_runs": fps["empty"],
            "ingest_fps_full_runs": fps["full"], "backlog_first_frame_s_empty": waits["empty"],
            "backlog_first_frame_s_full": waits["full"]}


def compaction_drain(collections: list[Path], timeout_s: float = 900.0) -> float:
    """Seconds until the writers of ``collections`` have compacted every kept run handed to them
    (``segments_queued`` 0). The live phase waits for it, so that it measures ingest beside the
    live frames' own compaction, not beside the backlogs' catch-up: on this host two busy vCPUs
    give about one core's work (two spinning processes each run at half the speed of one alone),
    so the catch-up slows ingest whatever its CPU priority."""
    import ray

    from cluster.service.writer import find_writer

    started = time.monotonic()
    writers = [find_writer(data) for data in collections]
    while any(ray.get(w.stats.remote())["segments_queued"] for w in writers if w is not None):
        if time.monotonic() - started > timeout_s:
            raise RuntimeError(f"compaction still queued after {timeout_s:.0f} s")
        time.sleep(0.5)
    return time.monotonic() - started


def _actor_rss() -> dict[str, float]:
    """RSS in MB of every Ray actor process (ours, Serve's) and of the writers' clip encoder
    processes, keyed ``"pid name"``."""
    out = {}
    for proc in psutil.process_iter(["cmdline"]):
        try:
            cmd = proc.info["cmdline"] or []
            if cmd and cmd[0].startswith("ray::") and "IDLE" not in cmd[0]:
                out[f"{proc.pid} {cmd[0].split()[0].split('.')[0]}"] = proc.memory_info().rss / 1e6  # no method
            elif "operators.stores.clip_encoder" in cmd:
                out[f"{proc.pid} clip_encoder"] = proc.memory_info().rss / 1e6
        except psutil.Error:
            continue
    return out


def query_client(url: str, collection: str, vectors: np.ndarray, go: Any, done: Any, results: Any) -> None:
    """A client process: from ``go`` until ``done``, top-10 queries with real frame vectors, five
    a second; puts ``[(monotonic time, ms)]`` on ``results``."""
    rng = np.random.default_rng(1)
    latencies = []
    go.wait()
    with ServiceClient(url, collection=collection) as client:
        while not done.is_set():
            q = vectors[int(rng.integers(len(vectors)))]
            t0 = time.perf_counter()
            client.similar(q, k=10)
            latencies.append((time.monotonic(), (time.perf_counter() - t0) * 1000))
            time.sleep(0.2)
    results.put(latencies)


class Live:
    """The live phase: paced cameras, a pipeline, a prober, a querier and an RSS sampler."""

    def __init__(self, servers: str, url: str, data: Path, jpegs: list[bytes], vectors: np.ndarray,
                 shape: tuple[int, int], cameras: int, rate: float, duration: float) -> None:
        self.servers, self.url, self.data = servers, url, data
        self.jpegs, self.vectors, self.shape = jpegs, vectors, shape
        self.cameras, self.rate, self.duration = cameras, rate, duration
        self.pending: dict[tuple[str, float], np.ndarray] = {}
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.answerable: list[tuple[float, float]] = []  # (seconds into the phase, ms)
        self.queries: list[tuple[float, float]] = []
        self.rss: list[tuple[float, dict[str, float]]] = []
        self.sent = 0
        self.start = 0.0

    def produce(self) -> None:
        with FrameProducer(self.servers, "live", linger_ms=0) as producer:
            self.start = time.monotonic()
            tick = 0
            while time.monotonic() - self.start < self.duration:
                delay = self.start + tick / self.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                for cam in range(self.cameras):
                    frame = (cam * 265 + tick) % len(self.jpegs)  # each camera its own stretch of the video
                    ts = time.time()
                    header = wire.Header(kind=wire.KIND_JPEG, camera=f"cam{cam}", ts=ts, frame0=tick,
                                         pts=tick / self.rate, shape=self.shape, count=1)
                    with self.lock:
                        self.pending[(f"cam{cam}", ts)] = self.vectors[frame]
                    producer.send(wire.WireMessage(header.camera.encode(), self.jpegs[frame], header))
                    self.sent += 1
                producer.flush()
                tick += 1

    def warm_up(self, timeout_s: float = 180.0) -> None:
        """Send one frame per camera (mirrored, so that no vector of the phase repeats it) and wait
        until the collection holds them: then the whole path flows (on a loaded machine the
        pipeline's actors took longer than a fixed wait, and the first frames queued behind them)."""
        with ServiceClient(self.url, collection=self.data.name) as client:
            before = client.stats()["ntotal"]
            with FrameProducer(self.servers, "live", linger_ms=0) as producer:
                for cam in range(self.cameras):
                    mirrored = mirrored_jpeg(decode_image(self.jpegs[cam]))
                    header = wire.Header(kind=wire.KIND_JPEG, camera=f"cam{cam}", ts=time.time(), frame0=0, pts=0.0,
                                         shape=self.shape, count=1)
                    producer.send(wire.WireMessage(header.camera.encode(), mirrored, header))
            deadline = time.monotonic() + timeout_s
            while client.stats()["ntotal"] < before + self.cameras:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the live pipeline ingested nothing within {timeout_s}s")
                time.sleep(0.2)
        time.sleep(2.0)  # the querier process ready too (it imports while the pipeline starts)

    def probe(self) -> None:
        """Every ``PROBE_PERIOD_S`` or so (:data:`PROBE_JITTER`), ask for the pending frames (one
        batched request) until each is its own top hit."""
        jitter = random.Random(0)
        with ServiceClient(self.url, collection=self.data.name) as client:
            tick = time.monotonic()
            while not self.done.is_set() or self.pending:
                tick += PROBE_PERIOD_S * jitter.uniform(*PROBE_JITTER)
                time.sleep(max(0.0, tick - time.monotonic()))
                with self.lock:
                    keys = list(self.pending)[:PROBE_BATCH]  # the oldest first
                if not keys:
                    continue
                rows = client.similar(np.stack([self.pending[k] for k in keys]), k=4)
                now = time.time()
                for (camera, ts), hits in zip(keys, rows):
                    top = hits[0].score if hits else None
                    if any(h.score >= top - 1e-6 and h.lineage.get("camera") == camera
                           and abs((h.lineage.get("wall_time") or 0) - ts) < 1e-3 for h in hits):
                        self.answerable.append((time.monotonic() - self.start, (now - ts) * 1000))
                        with self.lock:
                            del self.pending[(camera, ts)]
                if self.done.is_set() and time.monotonic() - self.start > self.duration + 60:
                    break  # frames never answered stay pending (reported as unanswered)

    def start_querier(self) -> Any:
        """Start the top-10 querier in a process of its own (:func:`query_client`), so that the
        client's latency is not the wait for this process's GIL (prober, producer, pipeline
        driver); it imports while the pipeline starts, and asks once the cameras do."""
        ctx = multiprocessing.get_context("spawn")
        go, done, results = ctx.Event(), ctx.Event(), ctx.Queue()
        client = ctx.Process(target=query_client, args=(self.url, self.data.name, self.vectors, go, done, results))
        client.start()
        return client, go, done, results

    def query(self, querier: Any) -> None:
        """Let the querier ask from the phase's start to its end; collect its latencies."""
        client, go, done, results = querier
        while not self.start:
            time.sleep(0.01)
        go.set()
        self.done.wait()
        done.set()
        self.queries = [(t - self.start, ms) for t, ms in results.get(timeout=60)]
        client.join(30)

    def sample_rss(self) -> None:
        while not self.done.is_set():
            if not self.start:  # the producer sets the phase's clock
                time.sleep(0.05)
                continue
            self.rss.append((time.monotonic() - self.start, _actor_rss()))
            time.sleep(2.0)

    def run(self) -> dict[str, Any]:
        ensure_topic(KafkaSettings(self.servers), "live", partitions=self.cameras)
        pipeline = threading.Thread(target=lambda: streamvision.run(
            _flow(self.servers, "live", self.data, "g-live", until_end=False), stop_after_s=self.duration + 25))
        pipeline.start()
        querier = self.start_querier()
        self.warm_up()  # the pipeline's actors up and its consumer group formed before the clock starts
        producer = threading.Thread(target=self.produce)
        helpers = [threading.Thread(target=self.probe, daemon=True),
                   threading.Thread(target=self.query, args=(querier,), daemon=True),
                   threading.Thread(target=self.sample_rss, daemon=True)]
        producer.start()
        for thread in helpers:
            thread.start()
        producer.join()
        self.done.set()
        for thread in helpers[:2]:  # the prober's last answers, the querier's latencies
            thread.join(90)
        pipeline.join(120)
        return {"sent": self.sent, "unanswered": len(self.pending)}


def recall_at_10(url: str, collection: str, npy: Path, queries: int = 50) -> float:
    """Top-10 over HTTP against exact numpy top-10 over the imported vectors (ids 1..n)."""
    x = np.load(npy, mmap_mode="r")
    rng = np.random.default_rng(2)
    q = np.asarray(x[rng.choice(len(x), queries, replace=False)], np.float32)
    exact = np.argsort(-(q @ np.asarray(x).T), axis=1)[:, :10] + 1
    with ServiceClient(url, collection=collection) as client:
        got = [[m.patch_id for m in row] for row in client.similar(q, k=10)]
    return float(np.mean([len(set(g) & set(e.tolist())) / 10 for g, e in zip(got, exact)]))


def rss_growth_by_actor(samples: list[tuple[float, dict[str, float]]], duration: float) -> dict[str, float]:
    """Each actor's RSS growth between its first sample after 10 % of the phase and its last one."""
    warm = [s for t, s in samples if 0.1 * duration <= t <= duration] or [s for _, s in samples]
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    for sample in warm:
        for actor, mb in sample.items():
            first.setdefault(actor, mb)
            last[actor] = mb
    return {actor: round(last[actor] - first[actor], 1) for actor in last}


def _wait_for_ray_to_exit(timeout_s: float = 60.0) -> None:
    """Wait until the previous Ray's processes are gone (they would share the cores)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        left = []
        for proc in psutil.process_iter(["cmdline"]):
            cmd = " ".join(proc.info["cmdline"] or [])
            if cmd.startswith("ray::") or "raylet" in cmd or "gcs_server" in cmd:
                left.append(proc.pid)
        if not left:
            return
        time.sleep(0.2)


def _seconds_to_answer(cmd: list[str], answered: Callable[[], bool]) -> float:
    """Seconds from starting ``cmd`` (a new process) to the first ``answered()``; then SIGTERM it.

    Raises:
        RuntimeError: ``cmd`` exited, or did not answer within 300 s (with the end of its stderr).
    """
    started = time.monotonic()
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            while time.monotonic() - started < 300 and proc.poll() is None:
                try:
                    if answered():
                        return time.monotonic() - started
                except Exception:  # noqa: BLE001 - not up yet
                    time.sleep(0.1)
        finally:
            proc.terminate()  # the service: snapshots written, actors and the front end stopped
            proc.wait(120)
        stderr.seek(0)
        said = stderr.read().decode(errors="replace")[-2000:]
    raise RuntimeError(f"{' '.join(cmd)} never answered (exit code {proc.returncode}): {said}")


def restart_to_first_answer(data_dirs: list[Path], port: int, q: np.ndarray, address: str | None = None) -> float:
    """Seconds from starting ``streamvision serve`` (a new process; a new Ray too unless ``address``)
    to its first answer."""
    cmd = [sys.executable, "-m", "streamvision.cli", "serve", *[a for d in data_dirs for a in ("--data", str(d))],
           "--port", str(port), *(["--address", address] if address else [])]
    with ServiceClient(f"http://127.0.0.1:{port}", collection=data_dirs[0].name, timeout_s=5) as client:
        return _seconds_to_answer(cmd, lambda: bool(client.similar(q, k=1)[0]))


def serve_hello_cold(port: int) -> float:
    """Seconds from starting ``benchmarks/serve_hello.py`` (a local Ray and Ray Serve's hello world,
    no StreamVision code) to its first answer: what a cold start of Ray Serve alone takes here."""
    with httpx.Client(timeout=5) as client:
        return _seconds_to_answer([sys.executable, str(REPO / "benchmarks" / "serve_hello.py"), str(port)],
                                  lambda: client.get(f"http://127.0.0.1:{port}/hello").status_code == 200)


def restarts(data_dirs: list[Path], port: int, q: np.ndarray, runs: int) -> dict[str, Any]:
    """Cold restarts (``streamvision serve`` starting its own Ray), each beside a cold start of Ray
    Serve's hello world, and service restarts on a running Ray cluster (``--address``, as on
    KubeRay), ``runs`` of each; medians and every run."""
    cold, hello = [], []
    for run in range(runs):
        _wait_for_ray_to_exit()
        cold.append(restart_to_first_answer(data_dirs, port, q))
        _wait_for_ray_to_exit()
        hello.append(serve_hello_cold(port + 100 + run))  # a port of its own: the service's may be in TIME_WAIT
    _wait_for_ray_to_exit()
    head = subprocess.run(["ray", "start", "--head", "--num-cpus", str(os.cpu_count()), "--include-dashboard=false",
                           "--node-ip-address", "127.0.0.1", "--port", "6390", "--disable-usage-stats"],
                          capture_output=True, text=True, env={**os.environ, "RAY_worker_maximum_startup_concurrency": "8"})
    if head.returncode:
        raise RuntimeError(f"ray start failed: {head.stderr[-2000:]}")
    try:
        restart_to_first_answer(data_dirs, port, q, address="127.0.0.1:6390")  # the cluster's first service
        on_cluster = [restart_to_first_answer(data_dirs, port, q, address="127.0.0.1:6390") for _ in range(runs)]
    finally:
        subprocess.run(["ray", "stop", "--force"], capture_output=True)
    return {"restart_to_first_answer_s": float(np.median(cold)), "restart_cold_runs_s": cold,
            "serve_hello_cold_s": float(np.median(hello)), "serve_hello_cold_runs_s": hello,
            "service_restart_on_cluster_s": float(np.median(on_cluster)), "service_restart_on_cluster_runs_s": on_cluster}


def plot(out: Path, live: Live, result: dict[str, Any]) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    if live.answerable:
        t, ms = zip(*live.answerable)
        axes[0].plot(t, ms, ".", ms=3)
    axes[0].set(title=f"capture -> top hit over HTTP (p99 {result['answerable_p99_ms']:.0f} ms)",
                xlabel="s into the live phase", ylabel="ms")
    if live.queries:
        t, ms = zip(*live.queries)
        axes[1].plot(t, ms, ".", ms=3, color="C1")
    axes[1].set(title=f"top-10 on {result['collection_vectors']:,} vectors (p99 {result['query_p99_ms']:.0f} ms)",
                xlabel="s into the live phase", ylabel="ms")
    pids = sorted({p for _, s in live.rss for p in s})
    for pid in pids:
        pts = [(t, s[pid]) for t, s in live.rss if pid in s]
        axes[2].plot([p[0] for p in pts], [p[1] for p in pts], lw=1)
    axes[2].set(title=f"actor RSS (max growth {result['rss_growth_mb']:.0f} MB)", xlabel="s", ylabel="MB")
    fig.suptitle(f"live: ingest full/empty {result['ingest_fps_full_vs_empty']:.2f}, "
                 f"restart to first answer {result['restart_to_first_answer_s']:.1f} s "
                 f"({result['service_restart_on_cluster_s']:.1f} s on a running Ray cluster; Ray Serve's hello "
                 f"world {result['serve_hello_cold_s']:.1f} s), "
                 f"bulk import {result['bulk_import_vectors_per_s']:,.0f} vectors/s")
    fig.tight_layout()
    fig.savefig(out / "live.png", dpi=110)


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--cameras", type=int, default=3)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--backlog", type=int, default=600)
    parser.add_argument("--backlog-rounds", type=int, default=3,
                        help="alternating empty/full backlog pairs measured (median ratio reported)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--restarts", type=int, default=3, help="restarts of each kind measured (median reported)")
    parser.add_argument("--index-factory", default="IVF1024,Flat",
                        help="FAISS index of the collections (IVF1024,Flat: 16 of 1024 lists searched; trained on the "
                             "first imported chunk)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    frames = [image for image, _ in FrameReader(str(vtest_video()))]
    shape = frames[0].shape[:2]
    jpegs = [wire.encode_pixels(f, wire.KIND_JPEG, QUALITY) for f in frames]
    # the backlogs' frames, mirrored: copies of the live phase's vectors would tie with its frames' top hits
    mirrored = [mirrored_jpeg(f) for f in frames]
    op = ColorHistogram(**HISTOGRAM)
    own = op.featurize([decode_image(j) for j in jpegs])  # what the pipeline makes of each message
    started = time.monotonic()
    npy = preload_vectors(frames, args.vectors)
    print(f"preload vectors ready in {time.monotonic() - started:.0f}s: {npy}", flush=True)

    root = Path(tempfile.mkdtemp(prefix="sv-live-"))
    full, empty = root / "full", root / "empty"
    ensure_ray(num_cpus=os.cpu_count())
    result: dict[str, Any] = {"collection_vectors": args.vectors, "cameras": args.cameras, "rate": args.rate,
                              "duration_s": args.duration, "backlog": args.backlog, "dim": op.dim,
                              "index_factory": args.index_factory}
    with EmbeddedBroker(state_dir=root / "broker") as broker:
        service = start_service([full, empty], port=args.port, writer_options={"index_factory": args.index_factory})
        try:
            t0 = time.monotonic()
            imported = import_embeddings(npy, full)
            result["bulk_import_s"] = time.monotonic() - t0
            result["bulk_import_vectors_per_s"] = imported / result["bulk_import_s"]
            print(f"imported {imported} in {result['bulk_import_s']:.0f}s", flush=True)
            result["recall_at_10"] = recall_at_10(service.url, full.name, npy)
            result.update(backlogs(broker.bootstrap_servers, mirrored, shape, {"empty": empty, "full": full},
                                   args.backlog, args.cameras, args.backlog_rounds))
            result["compaction_drain_s"] = compaction_drain([full, empty])
            print(f"backlogs compacted {result['compaction_drain_s']:.0f}s after the last one", flush=True)
            live = Live(broker.bootstrap_servers, service.url, full, jpegs, own, shape, args.cameras, args.rate,
                        args.duration)
            result.update(live.run())
        finally:
            service.stop()
    import ray

    ray.shutdown()
    answerable = [ms for _, ms in live.answerable]
    queries = [ms for t, ms in live.queries if t >= 0]
    result.update(
        answerable_p50_ms=_percentile(answerable, 50), answerable_p99_ms=_percentile(answerable, 99),
        answered=len(answerable), query_p50_ms=_percentile(queries, 50), query_p99_ms=_percentile(queries, 99),
        queries=len(queries), rss_growth_by_actor_mb=rss_growth_by_actor(live.rss, args.duration),
        machine={"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        targets={"answerable_p99_ms": "<= 1000", "query_p99_ms": "<= 100", "ingest_fps_full_vs_empty": ">= 0.9",
                 "restart_to_first_answer_s": "<= 10", "rss_growth_mb": "<= 50"},
    )
    result.update(restarts([full, empty], args.port, own[0], args.restarts))
    result["rss_growth_mb"] = max(result["rss_growth_by_actor_mb"].values(), default=float("nan"))
    (args.out / "live.json").write_text(json.dumps(result, indent=2))
    plot(args.out, live, result)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()
