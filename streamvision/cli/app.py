"""The ``streamvision`` command line.

    streamvision ingest VIDEO --data DIR          video -> patches -> index + lineage
    streamvision run PIPELINE.yaml                a pipeline file (local Ray, or --address)
    streamvision query similar IMAGE --data DIR -k 5 [--json]
    streamvision lineage PATCH_ID --data DIR [--json]
    streamvision demo                             the whole thing on a real sample video
    streamvision query threshold|near-duplicates|join|index-stats ...   (the sharded index service)
    streamvision models list|pull NAME            pretrained models, fetched into the cache
    streamvision broker start|stop|status         the embedded Kafka-compatible broker
    streamvision produce SOURCE --topic T --camera ID
    streamvision train --mst MST.yaml --data ...  model hopper parallelism
"""

from __future__ import annotations

import streamvision

import json
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from streamvision.cli import index as cli_index, kafka as cli_kafka, models as cli_models, train as cli_train
from streamvision.core.errors import StreamVisionError

app = typer.Typer(help="StreamVision: streaming visual data on Ray.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
query_app = typer.Typer(help="Ask the index: similar, threshold, near-duplicates, join.", no_args_is_help=True)
query_app.registered_commands.extend(cli_index.app.registered_commands)
app.add_typer(query_app, name="query")
app.add_typer(cli_models.app, name="models")
app.add_typer(cli_train.app, name="train")
app.add_typer(cli_kafka.broker_app, name="broker")
app.command("produce")(cli_kafka.produce)
console = Console(stderr=True)


def _progress_bar(total: int | None) -> tuple[Progress, Callable[[Any], None]]:
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[fps]:.0f} frames/s  {task.fields[written]} written"),
                   TimeElapsedColumn(), console=console, transient=False)
    task = bar.add_task("frames", total=total, fps=0.0, written=0)

    def update(p: Any) -> None:
        bar.update(task, completed=p.frames, fps=p.fps, written=p.written)

    return bar, update


def _run_flow(flow: Any, address: str | None, total: int | None) -> Any:
    bar, update = _progress_bar(total)
    with bar:
        report = streamvision.run(flow, address=address, progress=update)
    console.print(f"[green]{report.frames} frames, {report.written} patches written in "
                  f"{report.elapsed_s:.1f}s ({report.fps:.0f} frames/s)"
                  + (" — stopped early, in-flight batches drained" if report.stopped_early else ""))
    return report


def _video_frames(video: Path) -> int | None:
    import av

    try:
        with av.open(str(video)) as container:
            return container.streams.video[0].frames or None
    except (av.error.FFmpegError, OSError, IndexError):
        return None


@app.command()
def ingest(
    video: Path = typer.Argument(..., help="Video file to ingest."),
    data: Path = typer.Option(..., "--data", help="Data directory (RocksDB lineage + FAISS index)."),
    every: int = typer.Option(1, help="Keep every N-th frame (default: every frame)."),
    fps: Optional[float] = typer.Option(None, help="Sample at about this many frames per second."),
    keyframes_only: bool = typer.Option(False, help="Decode keyframes only."),
    start: float = typer.Option(0.0, help="First second to read."),
    end: Optional[float] = typer.Option(None, help="Stop before this second."),
    replicas: int = typer.Option(1, help="Actors per featurizing step."),
    featurizer: str = typer.Option("models", help="models: NanoDet-m crops + whole frames embedded by "
                                                  "EfficientNet-Lite0; histogram: colour histograms of whole frames."),
    address: Optional[str] = typer.Option(None, help="Ray cluster address (default: local Ray)."),
) -> None:
    """Decode a video, detect and featurize every frame, and index it with lineage."""
    from streamvision.plan.pipelines import video_ingest_flow

    flow = video_ingest_flow(video, data, featurizer=featurizer, every=every, fps=fps,  # type: ignore[arg-type]
                             keyframes_only=keyframes_only, start=start, end=end, replicas=replicas)
    total = _video_frames(video)
    _run_flow(flow, address, total // every if total and every > 1 else total)


@app.command()
def run(
    pipeline: Path = typer.Argument(..., help="Pipeline YAML file."),
    address: Optional[str] = typer.Option(None, help="Ray cluster address (default: local Ray, or the "
                                                     "cluster of a `ray job submit` job)."),
) -> None:
    """Run a pipeline file until its sources end (Ctrl-C drains and stops)."""
    from streamvision.plan.dataflow import Dataflow

    flow = Dataflow.from_yaml(pipeline)
    _run_flow(flow, address, None)


def _print_matches(matches: list[Any], as_json: bool, query: dict[str, Any]) -> None:
    if as_json:
        print(json.dumps({"query": query, "results": [m.as_dict() for m in matches]}, indent=2))
        return
    table = Table("rank", "patch id", "score", "source", "frame_no", "ts", "label")
    for rank, m in enumerate(matches, 1):
        src = m.lineage.get("source") or {}
        where = src.get("file") or f"{src.get('topic')}/{src.get('partition')}@{src.get('offset')}"
        table.add_row(str(rank), str(m.patch_id), f"{m.score:.4f}", str(where), str(m.lineage.get("frame_no")),
                      f"{m.lineage.get('ts') or 0:.2f}", m.lineage.get("label") or "")
    Console().print(table)


@query_app.command("similar")
def query_similar(
    image: Path = typer.Argument(..., help="Query image."),
    data: Path = typer.Option(..., "--data", help="Data directory."),
    k: int = typer.Option(10, "-k", "--k", help="Number of results."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """The K patches that look most like IMAGE."""
    from streamvision.api.query import connect

    with connect(data) as sv:
        _print_matches(sv.similar(image, k), as_json, {"image": str(image), "k": k})


@app.command()
def lineage(
    patch_id: int = typer.Argument(..., help="Patch id."),
    data: Path = typer.Option(..., "--data", help="Data directory."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Where a patch came from: its chain of patches down to the frame and offset."""
    from streamvision.api.query import connect

    with connect(data) as sv:
        chain = sv.lineage(patch_id)
    if as_json:
        print(json.dumps({"patch_id": patch_id, "lineage": chain}, indent=2))
        return
    for depth, link in enumerate(chain):
        Console().print("  " * depth + ("└ " if depth else "") + json.dumps(link))


@app.command()
def demo(
    data: Path = typer.Option(Path("streamvision-demo"), "--data", help="Data directory to create."),
    query_frame: int = typer.Option(75, help="Frame of the video to query with."),
    featurizer: str = typer.Option("models", help="models (NanoDet-m + EfficientNet-Lite0) or histogram."),
    limit: Optional[int] = typer.Option(150, help="Produce the first N frames (the CPU-only default keeps the "
                                                  "demo to a minute or two; 0 = the whole video)."),
    bootstrap_servers: Optional[str] = typer.Option(None, "--bootstrap-servers",
                                                    help="A Kafka cluster to use (default: start the embedded broker)."),
) -> None:
    """Fetch a real video, send it through Kafka into the dataflow, and ask what looks like one of its frames."""
    from streamvision.api.demo import run_demo

    run_demo(data, query_frame, console, run_flow=lambda flow, total: _run_flow(flow, None, total),
             featurizer=featurizer, bootstrap_servers=bootstrap_servers, limit=limit or None)  # type: ignore[arg-type]


def main() -> None:
    """Entry point: run the CLI, turning StreamVision's errors into one clear line and exit code 2."""
    try:
        app()
    except StreamVisionError as exc:
        console.print(f"[red]error:[/red] {exc}")
        sys.exit(2)


if __name__ == "__main__":
    main()
