"""``streamvision label``: set a user label on patches (what ``streamvision train`` learns).

    streamvision label 1234 5678 --as person --data DIR [--by ana]
    streamvision label 1234 --as vehicle --service http://127.0.0.1:8000

A served directory is labelled through its service; each label is stored with who set it
and when (``streamvision label --show ID --data DIR`` prints its history).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer


def label(
    patch_ids: List[int] = typer.Argument(..., help="Patch ids to label."),
    name: Optional[str] = typer.Option(None, "--as", help="The label to set."),
    data: Optional[Path] = typer.Option(None, "--data", help="The collection's data directory."),
    service: Optional[str] = typer.Option(None, "--service", help="URL of a running service instead."),
    by: Optional[str] = typer.Option(None, "--by", help="Who sets it (default: your login name)."),
    show: bool = typer.Option(False, "--show", help="Print the patches' labels and history instead."),
) -> None:
    """Label patches as NAME (stored with who set it and when), or --show their labels."""
    from streamvision.api.labels import get_label, set_labels
    from streamvision.core.errors import ConfigError

    if (data is None) == (service is None):
        raise ConfigError("give one of --data DIR or --service URL")
    if show:
        if data is None:
            raise ConfigError("--show reads a data directory: give --data DIR")
        for pid in patch_ids:
            typer.echo(json.dumps(get_label(data, pid)))
        return
    if name is None:
        raise ConfigError("name the label: --as NAME")
    typer.echo(json.dumps(set_labels(service or data, patch_ids, name, by=by)))  # type: ignore[arg-type]
