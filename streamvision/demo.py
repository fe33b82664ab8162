"""``streamvision demo``: the whole system on a real video, start to finish."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import av
import cv2
from rich.console import Console
from rich.table import Table

from streamvision.assets import vtest_video
from streamvision.pipelines import video_ingest_flow
from streamvision.query import connect


def extract_frame(video: Path, frame_no: int, out: Path) -> Path:
    """Write frame ``frame_no`` of ``video`` as a PNG (the query image)."""
    with av.open(str(video)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == frame_no:
                cv2.imwrite(str(out), cv2.cvtColor(frame.to_ndarray(format="rgb24"), cv2.COLOR_RGB2BGR))
                return out
    raise ValueError(f"{video} has fewer than {frame_no + 1} frames")


def run_demo(data: Path, query_frame: int, console: Console, run_flow: Callable[[Any, int], Any]) -> None:
    """Fetch vtest.avi, ingest every frame into ``data``, query with one frame, show lineage."""
    console.print("[bold]1. Sample video[/bold]: vtest.avi from Debian's opencv-doc (fetched once, cached)")
    video = vtest_video()
    console.print(f"   {video}")
    console.print(f"[bold]2. Ingest[/bold] every frame into {data} (PyAV decode -> colour histograms -> "
                  "FAISS + RocksDB lineage, as Ray actors)")
    run_flow(video_ingest_flow(video, data), 795)
    query = extract_frame(video, query_frame, data / f"query-frame-{query_frame}.png")
    console.print(f"[bold]3. What looks like frame {query_frame}?[/bold] (query image {query})")
    with connect(data) as sv:
        matches = sv.similar(query, k=5)
        table = Table("rank", "patch id", "score", "frame_no", "ts (s)")
        for rank, m in enumerate(matches, 1):
            table.add_row(str(rank), str(m.patch_id), f"{m.score:.4f}", str(m.lineage["frame_no"]),
                          f"{m.lineage['ts']:.1f}")
        Console().print(table)
        chain = sv.lineage(matches[0].patch_id)
    console.print(f"[bold]4. Where did patch {matches[0].patch_id} come from?[/bold]")
    for link in chain:
        if "frame" in link:
            console.print(f"   frame {link['frame']}")
        else:
            console.print(f"   patch {link['patch_id']} made by {link['model']} (bbox {link['bbox']})")
    console.print(f"Try: streamvision query similar {query} --data {data} -k 5 --json")
