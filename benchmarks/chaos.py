"""Chaos, poison and fuzz figures of the reliability issue, on this machine, one run.

1. **chaos matrix**: 3 cameras x 40 real vtest.avi JPEG frames on a two-partition topic of the
   embedded broker, through a dataflow with 2 replicas of the source and of each operator, into
   a collection served by ``streamvision serve``'s actors. An uninterrupted run is the
   reference; then, for each fault and each moment (a share of the frames written), a fresh
   collection is written while one process is killed with SIGKILL: the source, an operator,
   the sink, the collection's writer, one of its shard actors, or the driver (a separate
   process, then started again). A fault is *survived* when the store (every column family
   but the vector log) and the index ids equal the reference's. ``lost``: reference frames or
   index ids missing; ``duplicated``: index entries beyond the unique ids.
2. **poison**: the hostile messages of ``tests/integration/test_poison_messages.py`` between
   good frames, and the two messages of ``tests/integration/test_failing_operators.py`` that an
   operator and the sink fail on; each must be dead-lettered once, also when the topic is read
   again.
3. **fuzz**: the codec fuzzer of ``tests/operators/test_wire_fuzz.py`` for ``--fuzz-seconds``.

    python benchmarks/chaos.py --out out/

writes ``out/chaos.json`` (``faults_injected``, ``faults_survived``, ``lost``, ``duplicated``,
``poison_cases``, ``poison_dead_lettered``, ``fuzz_inputs``, ``fuzz_crashes``,
``max_source_rss_mb``) and ``out/chaos.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any, Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import ray  # noqa: E402
from kafka import KafkaConsumer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import streamvision  # noqa: E402
from cluster.broker import EmbeddedBroker  # noqa: E402
from cluster.local import ensure_ray  # noqa: E402
from cluster.service import names  # noqa: E402
from cluster.service.server import start_service  # noqa: E402
from operators.assets import vtest_video  # noqa: E402
from operators.featurizers.color_histogram import ColorHistogram  # noqa: E402
from operators.index.sharded import ShardedIndex  # noqa: E402
from operators.patches.whole_frame import WholeFramePatches  # noqa: E402
from operators.producers import FrameProducer  # noqa: E402
from operators.producers.frame_reader import FrameReader  # noqa: E402
from operators.sinks.collection_writer import read_manifest  # noqa: E402
from operators.sinks.store_sink import StoreSink  # noqa: E402
from operators.sources.kafka_source import KafkaSource  # noqa: E402
from operators.stores.lineage_store import BATCHING_FAMILIES, LineageStore  # noqa: E402
from streamvision.plan.dataflow import Dataflow  # noqa: E402
from tests.integration import test_failing_operators as failing  # noqa: E402
from tests.integration import test_poison_messages as poison  # noqa: E402
from tests.operators.test_wire_fuzz import fuzz_run  # noqa: E402

TOPIC, CAMERAS, PER_CAMERA = "chaos", ("cam-a", "cam-b", "cam-c"), 40
TOTAL = len(CAMERAS) * PER_CAMERA
GROUP_TIMING = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}
FAULTS = ("SourceActor", "OperatorActor", "SinkActor", "WriterActor", "ShardActor", "driver")
HISTOGRAM = {"bins": 4, "grid": 2}

_DRIVER = textwrap.dedent("""
    import sys
    sys.path[:0] = [sys.argv[5], sys.argv[5] + "/benchmarks"]  # the checkout, installed or not
    import streamvision
    from chaos import flow

    streamvision.run(flow(sys.argv[1], sys.argv[2], sys.argv[3]), address=sys.argv[4],
                     progress=lambda p: print("written", p.written, flush=True))
""")


def flow(servers: str, data: str, group: str) -> Dataflow:
    """The pipeline under test: 2 replicas of the source and of each operator."""
    source = KafkaSource(topic=TOPIC, bootstrap_servers=servers, group_id=group, until_end=True, **GROUP_TIMING)
    out = Dataflow(f"chaos:{group}")
    (out.source(source, replicas=2, num_cpus=0.25, max_batch=8)
        .then(WholeFramePatches(), replicas=2, num_cpus=0.25)
        .then(ColorHistogram(**HISTOGRAM), replicas=2, num_cpus=0.25)
        .sink(StoreSink(data=str(data)), num_cpus=0.25))
    return out


def digest(data: Path) -> dict[str, frozenset[bytes]]:
    """What the store holds, but the vector log (its positions follow batching)."""
    with LineageStore(data / "lineage", read_only=True) as store:
        return store.contents(exclude=BATCHING_FAMILIES)


def index_ids(data: Path) -> tuple[set[int], int]:
    """The ids the collection's shards hold (snapshot + replay), and their total entries."""
    manifest = read_manifest(data)
    with ShardedIndex.open(data, int(manifest["dim"]), manifest.get("factory", "Flat"),
                           int(manifest.get("shards", 2))) as index:
        ids = index.items()[0]
        return {int(i) for i in ids}, len(ids)


def _victim_pid(kind: str, data: Path) -> int | None:
    """The pid of one process of ``kind`` serving this run (the collection's own writer or shard)."""
    if kind == "WriterActor":
        return ray.get(ray.get_actor(names.writer_name(data), namespace=names.NAMESPACE).pid.remote())
    if kind == "ShardActor":
        manifest = read_manifest(data)
        if not manifest.get("dim"):
            return None
        actor = ray.get_actor(names.shard_name(data, 0, int(manifest.get("shards", 2))), namespace=names.NAMESPACE)
        return ray.get(actor.pid.remote())
    import psutil

    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.cmdline() and proc.cmdline()[0].startswith(f"ray::{kind}"):
                return proc.pid
        except psutil.Error:
            continue
    return None


def _killer(kind: str, data: Path, at: int) -> tuple[Callable[[Any], None], dict[str, Any]]:
    state: dict[str, Any] = {"killed": None}

    def progress(p: Any) -> None:
        if state["killed"] is None and p.written >= at:
            pid = _victim_pid(kind, data)
            if pid:
                os.kill(pid, signal.SIGKILL)
                state["killed"] = pid

    return progress, state


def _kill_driver(servers: str, data: Path, group: str, at: int) -> bool:
    script = Path(tempfile.mkdtemp(prefix="sv-chaos-")) / "driver.py"
    script.write_text(_DRIVER)
    address = ray.get_runtime_context().gcs_address
    log = script.with_suffix(".log")
    proc = subprocess.Popen([sys.executable, str(script), servers, str(data), group, address, str(REPO)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=log.open("w"), text=True)
    killed = False
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            if line.startswith("written") and int(line.split()[1]) >= at:
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
                break
    finally:
        if not killed:
            proc.kill()
        proc.wait(60)
    if not killed:
        print(f"the driver ended before it was killed (exit {proc.returncode}); its log: {log}\n"
              f"{log.read_text()[-3000:]}", file=sys.stderr)
    time.sleep(5.0)  # Ray tears down the dead driver's actors (the sink lets go of its batch)
    return killed


def chaos(servers: str, root: Path, moments: list[float]) -> dict[str, Any]:
    runs = [(kind, m) for kind in FAULTS for m in moments]
    dirs = {"reference": root / "reference", **{f"{k}@{m}": root / f"{k}-{m}" for k, m in runs}}
    service = start_service(list(dirs.values()), port=8799)
    results: list[dict[str, Any]] = []
    try:
        t0 = time.monotonic()
        report = streamvision.run(flow(servers, str(dirs["reference"]), "g-reference"))
        reference_s = time.monotonic() - t0
        rss = [report.sources["kafka"].get("max_rss_mb", 0)]
        for kind, moment in runs:
            data, group, at = dirs[f"{kind}@{moment}"], f"g-{kind}-{moment}", int(moment * TOTAL)
            t0 = time.monotonic()
            if kind == "driver":
                killed = _kill_driver(servers, data, group, at)
                report = streamvision.run(flow(servers, str(data), group))
            else:
                progress, state = _killer(kind, data, at)
                report = streamvision.run(flow(servers, str(data), group), progress=progress)
                killed = state["killed"] is not None
            rss.append(report.sources["kafka"].get("max_rss_mb", 0))
            results.append({"fault": kind, "moment": moment, "killed": killed, "seconds": time.monotonic() - t0})
            print(json.dumps(results[-1]), flush=True)
    finally:
        service.stop()  # snapshots written: the index is read back below
    ref_store, (ref_ids, _) = digest(dirs["reference"]), index_ids(dirs["reference"])
    for run in results:
        data = dirs[f"{run['fault']}@{run['moment']}"]
        store, (ids, entries) = digest(data), index_ids(data)
        run["lost"] = sum(len(ref_store[f] - store[f]) for f in ref_store) + len(ref_ids - ids)
        run["extra"] = sum(len(store[f] - ref_store[f]) for f in ref_store) + len(ids - ref_ids)
        run["duplicated"] = entries - len(ids)
        run["survived"] = bool(run["killed"] and run["lost"] == run["extra"] == run["duplicated"] == 0)
    return {"runs": results, "reference_s": reference_s, "max_source_rss_mb": max(rss),
            "faults_injected": sum(r["killed"] for r in results),
            "faults_survived": sum(r["survived"] for r in results),
            "lost": sum(r["lost"] for r in results), "duplicated": sum(r["duplicated"] + r["extra"] for r in results)}


def _letters(servers: str) -> list[Any]:
    dlq = KafkaConsumer(f"{poison.TOPIC}.dlq", bootstrap_servers=servers, auto_offset_reset="earliest",
                        consumer_timeout_ms=4000)
    try:
        return list(dlq)
    finally:
        dlq.close()


def poison_cases(broker: Any, images: list, root: Path) -> dict[str, Any]:
    """Each hostile message dead-lettered once with its reason, also when the topic is read again;
    so is each message that an operator or the sink fails on."""
    reasons, _ = poison.send_poisoned(broker.bootstrap_servers, poison.TOPIC, images, vtest_video())
    first = streamvision.run(poison._flow(broker, root / "poison-a")).sources["kafka"]
    again = streamvision.run(poison._flow(broker, root / "poison-b")).sources["kafka"]
    letters = _letters(broker.bootstrap_servers)
    got = [(int(dict(r.headers)["sv-dlq-offset"]), dict(r.headers)["sv-error"].split(b":")[0].decode())
           for r in letters]
    # and the messages an operator or the sink fails on, read twice by one group
    failing.send_messages(broker.bootstrap_servers, vtest_video())
    for name in ("failing-a", "failing-b"):
        streamvision.run(failing.flow(broker.bootstrap_servers, root / name))
    late = failing.letters(broker.bootstrap_servers)
    late_got = [int(dict(r.headers)["sv-dlq-offset"]) for r in late]
    late_expected = [failing.OPERATOR_FAILS, failing.SINK_FAILS]
    return {"poison_cases": len(reasons) + len(late_expected),
            "poison_dead_lettered": len({o for o, _ in got}) + len(set(late_got) & set(late_expected)),
            "poison_letters_written": len(letters) + len(late),
            "poison_reasons_match": [r for _, r in got] == reasons and late_got == late_expected,
            "poison_rss_mb": max(first.get("max_rss_mb", 0), again.get("max_rss_mb", 0))}


def plot(result: dict[str, Any], path: Path) -> None:
    runs = result["runs"]
    fig, ax = plt.subplots(figsize=(11, 4.5))
    labels = [f"{r['fault'].replace('Actor', '')}\n@{r['moment']:.0%}" for r in runs]
    ax.bar(range(len(runs)), [r["seconds"] for r in runs],
           color=["C2" if r["survived"] else "C3" for r in runs])
    ax.axhline(result["reference_s"], color="k", lw=1, ls="--", label="uninterrupted run")
    ax.set_xticks(range(len(runs)), labels, fontsize=8)
    ax.set(ylabel="s to a complete store", title=(
        f"chaos: {result['faults_survived']}/{result['faults_injected']} faults survived (green), lost "
        f"{result['lost']}, duplicated {result['duplicated']}; poison {result['poison_dead_lettered']}/"
        f"{result['poison_cases']} dead-lettered once; fuzz {result['fuzz_inputs']} inputs, "
        f"{result['fuzz_crashes']} crashes"))
    ax.title.set_fontsize(9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--moments", type=float, nargs="+", default=[0.25, 0.6],
                        help="when to kill, as shares of the frames written")
    parser.add_argument("--fuzz-seconds", type=float, default=120.0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="sv-chaos-"))
    images = [image for _, (image, _) in zip(range(max(TOTAL, 50)), FrameReader(str(vtest_video())))]
    ensure_ray(num_cpus=os.cpu_count())
    with EmbeddedBroker(state_dir=root / "broker") as broker:
        with FrameProducer(broker.bootstrap_servers, TOPIC, partitions=2) as producer:
            for c, camera in enumerate(CAMERAS):
                chunk = images[c * PER_CAMERA:(c + 1) * PER_CAMERA]
                producer.send_frames([(im, i / 10) for i, im in enumerate(chunk)], camera=camera, kind="jpeg",
                                     quality=85)
        result = chaos(broker.bootstrap_servers, root, args.moments)
        result.update(poison_cases(broker, images, root))
    ray.shutdown()
    fuzz = fuzz_run(vtest_video(), seconds=args.fuzz_seconds, bombs=True)
    result.update(fuzz_inputs=fuzz["fuzz_inputs"], fuzz_crashes=fuzz["fuzz_crashes"])
    result["max_source_rss_mb"] = max(result["max_source_rss_mb"], result.pop("poison_rss_mb"))
    result["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    (args.out / "chaos.json").write_text(json.dumps(result, indent=2))
    plot(result, args.out / "chaos.png")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
