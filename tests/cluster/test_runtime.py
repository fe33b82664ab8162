"""The Ray runtime on the real video: bounded edges, draining, dynamic batching, errors, restarts."""

from __future__ import annotations

import streamvision

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import ray

from operators.base import Operator, Sink
from operators.featurizers.color_histogram import ColorHistogram
from operators.patches.whole_frame import WholeFramePatches
from operators.sinks.store_sink import StoreSink
from operators.sources.video_file import VideoFileSource
from streamvision.plan.dataflow import Dataflow
from streamvision.core.errors import ConfigError, InputError
from streamvision.core.types import PatchType


def _slow_sink(delay_s: float):
    """A sink that takes ``delay_s`` per write and remembers the batch sizes it saw."""

    class SlowSink(Sink):
        name = "slow_sink"

        def __init__(self) -> None:
            self.sizes: list[int] = []

        def input_type(self) -> PatchType:
            return PatchType()

        def write(self, batch) -> int:
            time.sleep(delay_s)
            self.sizes.append(len(batch))
            return len(batch)

        def stats(self) -> dict:
            return {"batches": len(self.sizes), "largest": max(self.sizes, default=0), "written": sum(self.sizes)}

    return SlowSink()


def test_slow_sink_bounds_what_is_in_flight(ray_cluster, vtest_path):
    flow = Dataflow("backpressure")
    (flow.source(VideoFileSource(path=str(vtest_path), every=4), max_batch=4)
         .then(WholeFramePatches())
         .sink(_slow_sink(0.05), max_in_flight=2))
    lag = []
    report = streamvision.run(flow, progress=lambda p: lag.append(p.frames - p.written))
    assert report.frames == report.written == 199
    # source pending (2) + the operator's edge (2 queued + 2 running) + the sink's (2 + 2), 4 frames each
    assert max(lag) <= 10 * 4
    assert report.sinks["slow_sink"]["largest"] == 4  # no merging without max_batch


class _NicenessSink(Sink):
    """Reports the CPU priority of the process it writes in."""

    name = "niceness_sink"

    def input_type(self) -> PatchType:
        return PatchType()

    def write(self, batch) -> int:
        return len(batch)

    def stats(self) -> dict:
        return {"niceness": os.nice(0)}


@ray.remote
def _worker_niceness() -> int:
    return os.nice(0)


def test_actors_lower_their_priority_as_their_resources_ask(ray_cluster, vtest_path):
    def niceness(**resources) -> int:
        flow = Dataflow("nice")
        flow.source(VideoFileSource(path=str(vtest_path), end=1.0)).then(WholeFramePatches()).sink(
            _NicenessSink(), **resources)
        return streamvision.run(flow).sinks["niceness_sink"]["niceness"]

    worker = ray.get(_worker_niceness.remote())  # the niceness Ray starts workers at (15 here)
    assert niceness() == worker  # a flow that writes into no served collection: as any worker
    assert niceness(nice=19) == 19
    assert niceness(nice=17) == max(17, worker)
    assert niceness(nice=0) == worker  # a process cannot raise its own priority
    with pytest.raises(ConfigError, match="nice"):
        niceness(nice=20)


_LOWER_PRIORITY_PROBE = """
import os, sys, threading
from cluster.priority import lower_priority
release = threading.Event()
other = threading.Thread(target=release.wait)
other.start()
lower_priority(int(sys.argv[1]))
lower_priority(3)
print(sorted({os.getpriority(os.PRIO_PROCESS, int(t)) for t in os.listdir("/proc/self/task")}))
release.set()
other.join()
"""


def test_lower_priority_lowers_every_thread_and_never_raises_one():
    done = subprocess.run([sys.executable, "-c", _LOWER_PRIORITY_PROBE, "7"], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert done.stdout.strip() == "[7]", done.stderr  # both threads; 3 did not raise them back


def test_dynamic_batching_merges_queued_batches(ray_cluster, vtest_path):
    flow = Dataflow("batching")
    (flow.source(VideoFileSource(path=str(vtest_path), every=4), max_batch=2)
         .then(WholeFramePatches())
         .sink(_slow_sink(0.1), max_batch=8, max_wait_ms=50))
    report = streamvision.run(flow)
    assert report.written == 199
    assert 2 < report.sinks["slow_sink"]["largest"] <= 8


def test_stop_drains_everything_in_flight(ray_cluster, vtest_path):
    flow = Dataflow("stop")
    flow.source(VideoFileSource(path=str(vtest_path)), max_batch=4).then(WholeFramePatches()).sink(_slow_sink(0.05))
    report = streamvision.run(flow, stop_after_s=1.0)
    assert report.stopped_early
    assert 0 < report.frames < 795
    assert report.written == report.frames  # what was read was written: nothing dropped


def test_operator_error_surfaces_with_its_message(ray_cluster, vtest_path):
    class Exploding(Operator):
        name = "exploding"

        def input_type(self):
            return PatchType()

        def output_type(self, upstream):
            return upstream

        def process(self, batch):
            raise InputError("patch 3 is corrupt")

    flow = Dataflow("error")
    flow.source(VideoFileSource(path=str(vtest_path), every=50)).then(WholeFramePatches(), num_cpus=0.5).then(
        Exploding(), max_restarts=0, num_cpus=0.5).sink(_slow_sink(0.0))
    with pytest.raises(InputError, match="patch 3 is corrupt"):
        streamvision.run(flow)


def test_bad_input_fails_before_the_store_is_touched(ray_cluster, tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video\n" * 10)
    flow = Dataflow("bad")
    flow.source(VideoFileSource(path=str(bad))).then(WholeFramePatches()).then(ColorHistogram()).sink(
        StoreSink(data=str(tmp_path / "data")))
    with pytest.raises(InputError, match="not a readable video"):
        streamvision.run(flow)
    assert not (tmp_path / "data").exists()


def test_graph_that_cannot_be_placed_is_refused(ray_cluster, vtest_path):
    flow = Dataflow("too-big")
    flow.source(VideoFileSource(path=str(vtest_path))).then(WholeFramePatches(), replicas=4).sink(_slow_sink(0.0))
    with pytest.raises(ConfigError, match=r"needs 5 CPUs but the Ray cluster has 2"):
        streamvision.run(flow)


def _our_actor_processes(class_name: str) -> list[psutil.Process]:
    """Worker processes of this session's Ray node running ``class_name`` (not other Rays')."""
    import ray

    raylet = ray._private.worker._global_node.all_processes["raylet"][0].process.pid
    found = []
    for proc in psutil.Process(raylet).children(recursive=True):
        try:
            if proc.cmdline() and proc.cmdline()[0].startswith(f"ray::{class_name}"):
                found.append(proc)
        except psutil.NoSuchProcess:
            continue
    return found


def test_killed_operator_actor_restarts_and_nothing_is_lost(ray_cluster, vtest_path, tmp_path):
    killed: list[int] = []

    def kill_one_featurizer() -> None:
        """Kill the featurizer mid-task if caught busy, else (its tasks are short) mid-run, 0.5 s
        after it first answers: batches are in flight or queued on it either way."""
        first_seen = None
        while not finished.is_set() and not killed:
            time.sleep(0.05)
            try:
                titles = {p.pid: p.cmdline()[0] for p in _our_actor_processes("OperatorActor") if p.pid not in earlier}
            except (psutil.NoSuchProcess, IndexError):
                continue  # a process exited while we looked
            ready = [pid for pid, title in titles.items() if title != "ray::OperatorActor.__init__"]
            first_seen = first_seen or (time.time() if ready else None)
            busy = [pid for pid in ready if "process" in titles[pid]]
            if busy or (first_seen and time.time() - first_seen > 0.5):
                try:
                    os.kill((busy or ready)[0], signal.SIGKILL)
                except ProcessLookupError:
                    continue
                killed.append((busy or ready)[0])

    flow = Dataflow("restart")
    (flow.source(VideoFileSource(path=str(vtest_path), every=2), max_batch=8)
         .then(WholeFramePatches()).then(ColorHistogram(bins=4, grid=1))
         .sink(StoreSink(data=str(tmp_path / "data"))))
    earlier = {p.pid for p in _our_actor_processes("OperatorActor")}  # other tests' actors, if still exiting
    finished = threading.Event()
    killer = threading.Thread(target=kill_one_featurizer)
    killer.start()
    try:
        report = streamvision.run(flow)
    finally:
        finished.set()
        killer.join()
    assert killed, "the featurizer actor never started"
    assert report.frames == 398
    assert report.sinks["store"]["indexed"] == 398
