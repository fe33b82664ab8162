"""Running a pipeline: the facade over the Ray runtime in ``cluster/``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from cluster.runtime import RunReport, run_dataflow
from streamvision.plan.dataflow import Dataflow
from streamvision.plan.rules import optimize


def run(
    pipeline: str | Path | Dataflow,
    *,
    address: str | None = None,
    progress: Callable[[Any], None] | None = None,
    stop_after_s: float | None = None,
) -> RunReport:
    """Validate a pipeline file or :class:`Dataflow`, then run it on Ray until its sources end.

    Ray is local unless ``address`` (or ``RAY_ADDRESS``) names a cluster. Ctrl-C (or
    ``stop_after_s``) stops reading and drains what is in flight.

    Raises:
        GraphValidationError: the graph's types disagree (nothing has started).
        ConfigError: a bad pipeline file.
    """
    flow = pipeline if isinstance(pipeline, Dataflow) else Dataflow.from_yaml(pipeline)
    flow.validate()
    return run_dataflow(optimize(flow), address=address, progress=progress, stop_after_s=stop_after_s)
