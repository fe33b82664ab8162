"""``streamvision demo``: the whole system on a real video, start to finish, through Kafka.

1. fetch the real sample video (vtest.avi from Debian's opencv-doc, cached, sha256-checked);
2. start the embedded Kafka-compatible broker (Tansu) on 127.0.0.1, or use ``bootstrap_servers``,
   and the live service on the data directory (shard actors, writer, HTTP API on 127.0.0.1);
3. produce the video's frames to a topic as JPEG messages (key = camera id);
4. run the default dataflow from the topic until its end: Kafka source -> NanoDet-m ->
   EfficientNet-Lite0 on crops and whole frames -> the service's writer (RocksDB lineage,
   then the shard actors), as Ray actors;
5. ask the service over HTTP what looks like one of its frames, and where the best match came
   from; with ``serve=True`` it keeps answering until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import av
import cv2
from rich.console import Console
from rich.table import Table

from operators.producers.frame_producer import FrameProducer
from operators.sources.kafka_source import KafkaSource
from operators.assets import vtest_video
from streamvision.core.errors import ConfigError
from streamvision.plan.pipelines import Featurizer, ingest_flow
from cluster.service.server import start_service
from streamvision.api.client import ServiceClient

DEMO_TOPIC = "vtest"
DEMO_CAMERA = "cam1"


def extract_frame(video: Path, frame_no: int, out: Path) -> Path:
    """Write frame ``frame_no`` of ``video`` as a PNG (the query image)."""
    with av.open(str(video)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == frame_no:
                out.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(out), cv2.cvtColor(frame.to_ndarray(format="rgb24"), cv2.COLOR_RGB2BGR))
                return out
    raise ValueError(f"{video} has fewer than {frame_no + 1} frames")


_MARKER = ".streamvision-demo"


def _fresh_data_dir(data: Path) -> None:
    """Start from an empty ``data``: the embedded broker is memory-only, so a previous demo's
    stored offsets would point past the new topic's end. Only a directory an earlier demo made
    (it holds the marker file) is wiped; anything else is refused."""
    if data.exists() and any(data.iterdir()):
        if not (data / _MARKER).exists():
            raise ConfigError(f"{data} exists and was not made by `streamvision demo`; give another --data")
        shutil.rmtree(data)
    data.mkdir(parents=True, exist_ok=True)
    (data / _MARKER).write_text("made by streamvision demo; wiped by the next demo run\n")


@contextlib.contextmanager
def _broker(bootstrap_servers: str | None, console: Console) -> Iterator[str]:
    if bootstrap_servers:
        yield bootstrap_servers
        return
    from cluster.broker import EmbeddedBroker

    with EmbeddedBroker() as broker:
        console.print(f"   embedded broker (Tansu) at {broker.bootstrap_servers}, log {broker.log_file}")
        yield broker.bootstrap_servers


def run_demo(data: Path, query_frame: int, console: Console, run_flow: Callable[[Any, int | None], Any], *,
             featurizer: Featurizer = "models", bootstrap_servers: str | None = None, limit: int | None = None,
             port: int = 8000, serve: bool = False) -> None:
    """Run the five steps of the module docstring into the data directory ``data``."""
    _fresh_data_dir(data)
    service = start_service([data], port=port)
    try:
        top = _steps(data, query_frame, console, run_flow, service.url, featurizer, bootstrap_servers, limit)
        if serve:
            _keep_serving(console, service.url, data, top)
        else:
            console.print(f"With --serve the web page stays at {service.url}/ (search, patches, live, SQL)")
    finally:
        service.stop()


def _keep_serving(console: Console, url: str, data: Path, patch_id: int) -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    console.print(f"[green]serving {data} at {url}[/green]; Ctrl-C stops. The web page: {url}/  Try:")
    console.print(f"   curl -s -X POST {url}/v1/similar -d '{{\"query\": {{\"patch_id\": {patch_id}}}, \"k\": 3}}'")
    console.print(f"   streamvision query similar IMAGE --service {url} -k 5")
    while not stop.wait(0.5):
        pass


def _steps(data: Path, query_frame: int, console: Console, run_flow: Callable[[Any, int | None], Any], url: str,
           featurizer: Featurizer, bootstrap_servers: str | None, limit: int | None) -> int:
    """Steps 1-5; returns the top match's patch id."""
    console.print("[bold]1. Sample video[/bold]: vtest.avi from Debian's opencv-doc (fetched once, cached)")
    video = vtest_video()
    console.print(f"   {video}")
    console.print(f"[bold]2. Broker and service[/bold]: the service answers at {url}")
    with _broker(bootstrap_servers, console) as servers:
        console.print(f"[bold]3. Produce[/bold] the frames to topic {DEMO_TOPIC!r} as JPEG messages")
        with FrameProducer(servers, DEMO_TOPIC) as producer:
            sent = producer.produce(str(video), camera=DEMO_CAMERA, kind="jpeg", limit=limit)
        console.print(f"   sent {sent.frames} frames in {sent.messages} messages ({sent.bytes / 1e6:.1f} MB)")
        console.print(f"[bold]4. Ingest[/bold] from Kafka into {data}: "
                      + ("NanoDet-m -> EfficientNet-Lite0 (crops and whole frames)" if featurizer == "models"
                         else "colour histograms") + " -> FAISS + RocksDB lineage, as Ray actors")
        source = KafkaSource(topic=DEMO_TOPIC, bootstrap_servers=servers, group_id="streamvision-demo",
                             until_end=True)
        run_flow(ingest_flow(source, data, featurizer=featurizer, name="demo"), sent.frames)
    query = extract_frame(video, query_frame, data / f"query-frame-{query_frame}.png")
    console.print(f"[bold]5. What looks like frame {query_frame}?[/bold] (query image {query})")
    with ServiceClient(url) as sv:
        matches = sv.similar(query, k=5)
        table = Table("rank", "patch id", "score", "frame_no", "label", "kafka offset")
        for rank, m in enumerate(matches, 1):
            src = m.lineage["source"] or {}
            table.add_row(str(rank), str(m.patch_id), f"{m.score:.4f}", str(m.lineage["frame_no"]),
                          m.lineage["label"] or "(whole frame)", f"{src.get('topic')}/{src.get('partition')}@"
                                                                  f"{src.get('offset')}")
        Console().print(table)
        chain = sv.lineage(matches[0].patch_id)
    console.print(f"   where did patch {matches[0].patch_id} come from?")
    for link in chain:
        if "frame" in link:
            console.print(f"   frame {link['frame']}")
        else:
            console.print(f"   patch {link['patch_id']} made by {link['model']} (bbox {link['bbox']})")
    console.print(f"Try: streamvision query similar {query} --data {data} -k 5 --json")
    return matches[0].patch_id
