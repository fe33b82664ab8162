"""``streamvision deploy``: swap a trained model into a running pipeline, or roll it back.

    streamvision deploy cam-heads --pipeline cam1            the exported model (mop_classifier)
    streamvision deploy --rollback --pipeline cam1           put back the previous version
    streamvision deploy --op color_histogram --param bins=8 --collection runs/cam-v2 --pipeline cam1

The swap happens between two batches: no frame is lost or processed twice, and every patch's
``model`` column (its lineage) names the version that made it. A featurizer's patches go to a
new collection (``--collection``), while the old one keeps answering.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List, Optional

import typer


def _params(pairs: Optional[List[str]]) -> dict[str, Any]:
    import yaml

    from streamvision.core.errors import ConfigError

    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--param takes KEY=VALUE, got {pair!r}")
        out[key] = yaml.safe_load(value)
    return out


def deploy(
    model: Optional[str] = typer.Argument(None, help="Exported model (name or .pt path) for mop_classifier."),
    pipeline: str = typer.Option(..., "--pipeline", help="Name of the running pipeline."),
    op: str = typer.Option("mop_classifier", "--op", help="Registered operator to deploy."),
    param: Optional[List[str]] = typer.Option(None, "--param", help="Operator option KEY=VALUE; repeatable."),
    node: Optional[str] = typer.Option(None, "--node", help="Node to replace (default: the one running --op)."),
    collection: Optional[Path] = typer.Option(None, "--collection", help="A featurizer's new collection."),
    rollback: bool = typer.Option(False, "--rollback", help="Put back what the last deployment replaced."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster of the pipeline (default: local)."),
) -> None:
    """Swap MODEL into the running pipeline at a batch boundary (or --rollback)."""
    from streamvision.api.mop import deploy as run_deploy

    record = run_deploy(model, pipeline, op=op, params=_params(param), node=node, collection=collection,
                        rollback=rollback, address=address)
    typer.echo(json.dumps(record, default=str))
