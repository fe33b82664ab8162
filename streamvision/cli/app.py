"""The ``streamvision`` command line.

    streamvision ingest VIDEO --data DIR          video -> patches -> index + lineage
    streamvision run PIPELINE.yaml                a pipeline file (local Ray, or --address)
    streamvision serve --data DIR [--port P]      the live service: shard actors, writer, HTTP API
    streamvision import FILE --data DIR           bulk-import embeddings (.parquet / .npy)
    streamvision query similar|threshold|near-duplicates|join|stats ... (--data DIR | --service URL)
    streamvision lineage PATCH_ID --data DIR [--json]
    streamvision sql "SELECT ..." --data DIR [--param q=IMAGE]   SQL over patches (DuckDB + the index)
    streamvision crop PATCH_ID --data DIR -o OUT.png   a patch's exact pixels, backtraced to its frame
    streamvision demo [--serve]                   the whole thing on a real sample video
    streamvision models list|pull NAME            pretrained models, fetched into the cache
    streamvision broker start|stop|status         the embedded Kafka-compatible broker
    streamvision produce SOURCE --topic T --camera ID
    streamvision train --mst MST.yaml --data ...  model hopper parallelism
    streamvision label PATCH_ID... --as NAME --data DIR   a user label (who, when), what train learns
    streamvision deploy MODEL --pipeline NAME     swap a model into a running pipeline (--rollback)
"""

from __future__ import annotations

import streamvision

import json
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from streamvision.cli import kafka as cli_kafka, models as cli_models, query as cli_query, serve as cli_serve
from streamvision.cli import train as cli_train
from streamvision.cli import label as cli_label
from streamvision.cli import deploy as cli_deploy
from streamvision.core.errors import StreamVisionError

app = typer.Typer(help="StreamVision: streaming visual data on Ray.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
app.add_typer(cli_query.app, name="query")
app.command("lineage")(cli_query.lineage)
app.command("sql")(cli_query.sql)
app.command("crop")(cli_query.crop)
app.command("serve")(cli_serve.serve)
app.command("import")(cli_serve.import_)
app.add_typer(cli_models.app, name="models")
app.add_typer(cli_train.app, name="train")
app.command("label")(cli_label.label)
app.command("deploy")(cli_deploy.deploy)
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
    replicas: Optional[int] = typer.Option(None, help="Actors per featurizing step (default: sized from --cpus)."),
    cpus: Optional[float] = typer.Option(None, "--cpus", help="CPUs the graph may reserve (default: the Ray cluster's)."),
    gpus: Optional[float] = typer.Option(None, "--gpus", help="GPUs the model steps share (default: the Ray cluster's)."),
    featurizer: str = typer.Option("models", help="models: NanoDet-m crops + whole frames embedded by "
                                                  "EfficientNet-Lite0; histogram: colour histograms of whole frames."),
    address: Optional[str] = typer.Option(None, help="Ray cluster address (default: local Ray)."),
) -> None:
    """Decode a video, detect and featurize every frame, and index it with lineage."""
    from cluster.local import cluster_capacity
    from cluster.service.names import served_ray_address
    from streamvision.plan.pipelines import video_ingest_flow

    if cpus is None or gpus is None:  # the Ray the run will use: --address, else the service's, else local
        have_cpus, have_gpus = cluster_capacity(address or served_ray_address(data))
    else:
        have_cpus, have_gpus = cpus, gpus
    flow = video_ingest_flow(video, data, featurizer=featurizer, every=every, fps=fps,  # type: ignore[arg-type]
                             keyframes_only=keyframes_only, start=start, end=end, replicas=replicas,
                             cpus=have_cpus if cpus is None else cpus, gpus=have_gpus if gpus is None else gpus)
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


@app.command()
def demo(
    data: Path = typer.Option(Path("streamvision-demo"), "--data", help="Data directory to create."),
    query_frame: int = typer.Option(75, help="Frame of the video to query with."),
    featurizer: str = typer.Option("models", help="models (NanoDet-m + EfficientNet-Lite0) or histogram."),
    limit: Optional[int] = typer.Option(150, help="Produce the first N frames (the CPU-only default keeps the "
                                                  "demo to a minute or two; 0 = the whole video)."),
    bootstrap_servers: Optional[str] = typer.Option(None, "--bootstrap-servers",
                                                    help="A Kafka cluster to use (default: start the embedded broker)."),
    port: int = typer.Option(8000, "--port", help="HTTP port of the demo's service (127.0.0.1)."),
    serve: bool = typer.Option(False, "--serve", help="Keep the service answering until Ctrl-C."),
) -> None:
    """Fetch a real video, send it through Kafka into the dataflow, and ask what looks like one of its frames."""
    from cluster.local import watching_own_ray
    from streamvision.api.demo import run_demo

    with watching_own_ray(cli_serve.exit_as_ray_stopped):  # a signal to the whole group stops its Ray too
        run_demo(data, query_frame, console, run_flow=lambda flow, total: _run_flow(flow, None, total),
                 featurizer=featurizer, bootstrap_servers=bootstrap_servers, limit=limit or None,  # type: ignore[arg-type]
                 port=port, serve=serve)


def main() -> None:
    """Entry point: run the CLI, turning StreamVision's errors into one clear line and exit code 2."""
    try:
        app()
    except StreamVisionError as exc:
        # one line whatever the width, and a message's own brackets (paths, "[Errno 30]") are not markup
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
