"""The ``streamvision`` command line (typer): one module per command group."""

from streamvision.cli.app import app, main

__all__ = ["app", "main"]
