"""CLI pieces for Kafka: ``streamvision broker start|stop|status`` and ``streamvision produce``.

The main CLI registers them::

    from streamvision.cli.kafka import broker_app, produce
    app.add_typer(broker_app, name="broker")
    app.command("produce")(produce)

``cluster`` and ``operators`` are imported when a command runs, not at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

broker_app = typer.Typer(help="The embedded Kafka-compatible broker (Tansu) on 127.0.0.1.", no_args_is_help=True)

_STATE_DIR = typer.Option(None, "--state-dir", help="Where the log, pid and info files live "
                          "(default: $STREAMVISION_BROKER_DIR or ~/.cache/streamvision/broker).")


def _state_dir(state_dir: Optional[Path]) -> Path:
    from cluster.broker import default_state_dir

    return state_dir if state_dir is not None else default_state_dir()


@broker_app.command("start")
def broker_start(
    port: Optional[int] = typer.Option(None, "--port", help="Port on 127.0.0.1 (default: a free one)."),
    state_dir: Optional[Path] = _STATE_DIR,
) -> None:
    """Start the broker in the background and print its bootstrap servers."""
    from cluster.broker import BrokerError, EmbeddedBroker

    try:
        broker = EmbeddedBroker(state_dir=_state_dir(state_dir), port=port).start(detach=True)
    except BrokerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(broker.bootstrap_servers)


@broker_app.command("status")
def broker_status(state_dir: Optional[Path] = _STATE_DIR) -> None:
    """Say whether the recorded broker runs (exit status 1 if not)."""
    from cluster.broker import read_status

    status = read_status(_state_dir(state_dir))
    typer.echo(status.describe())
    if not status.running:
        raise typer.Exit(1)


@broker_app.command("stop")
def broker_stop(state_dir: Optional[Path] = _STATE_DIR) -> None:
    """Stop the recorded broker (its topics are lost: the broker is memory-only)."""
    from cluster.broker import stop_recorded

    root = _state_dir(state_dir)
    typer.echo("broker stopped" if stop_recorded(root) else f"no broker was running for {root}")


def _bootstrap(bootstrap_servers: Optional[str], state_dir: Optional[Path]) -> str:
    if bootstrap_servers:
        return bootstrap_servers
    from cluster.broker import read_status

    status = read_status(_state_dir(state_dir))
    if not status.running or not status.bootstrap_servers:
        typer.echo("error: no --bootstrap-servers given and no embedded broker running "
                   "(start one with `streamvision broker start`)", err=True)
        raise typer.Exit(2)
    return status.bootstrap_servers


def produce(
    source: str = typer.Argument(..., help="A video file, an image folder, or a URL PyAV opens (rtsp://, http://)."),
    topic: str = typer.Option(..., "--topic", "-t", help="Topic to write."),
    camera: str = typer.Option(..., "--camera", "-c", help="Camera id (the message key)."),
    kind: str = typer.Option("jpeg", "--kind", help="jpeg | png | raw (a frame per message) or h264 (segments)."),
    fps: Optional[float] = typer.Option(None, "--fps", help="Pace at this many frames/s (default: as fast as possible)."),
    quality: int = typer.Option(90, "--quality", help="JPEG quality 1..100."),
    segment_seconds: float = typer.Option(2.0, "--segment-seconds", help="Length of an H.264 segment."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Stop after this many frames."),
    partitions: Optional[int] = typer.Option(None, "--partitions", help="Create the topic with this many partitions."),
    max_message_bytes: Optional[int] = typer.Option(None, "--max-message-bytes", help="Refuse larger messages."),
    bootstrap_servers: Optional[str] = typer.Option(None, "--bootstrap-servers", "-b",
                                                    help="Kafka brokers (default: the embedded broker)."),
    state_dir: Optional[Path] = _STATE_DIR,
) -> None:
    """Send the frames of SOURCE to a Kafka topic in StreamVision's wire format."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from kafka.errors import KafkaError

    from operators.producers.frame_producer import FrameProducer, ProduceReport
    from operators.producers.frame_reader import FrameReader
    from operators.kafka import wire
    from streamvision.core.errors import StreamVisionError

    servers = _bootstrap(bootstrap_servers, state_dir)
    try:
        total = FrameReader(source).total
        if limit is not None:
            total = min(total, limit) if total else limit
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[mb]:.1f} MB"), TimeElapsedColumn()) as bar:
            task = bar.add_task(f"{camera} -> {topic}", total=total, mb=0.0)

            def advance(report: ProduceReport) -> None:
                bar.update(task, completed=report.frames, mb=report.bytes / 1e6)

            with FrameProducer(servers, topic, partitions=partitions,
                               max_message_bytes=max_message_bytes or wire.DEFAULT_MAX_MESSAGE_BYTES) as producer:
                report = producer.produce(source, camera=camera, kind=kind, quality=quality,
                                          segment_seconds=segment_seconds, fps=fps, limit=limit, progress=advance)
    except (StreamVisionError, KafkaError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"sent {report.frames} frames in {report.messages} messages ({report.bytes / 1e6:.1f} MB) "
               f"to {topic} in {report.seconds:.1f} s")
