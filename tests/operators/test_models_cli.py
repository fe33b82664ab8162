"""``streamvision models list / pull`` on a private cache."""

from __future__ import annotations

from typer.testing import CliRunner

from streamvision.cli.models import app


def test_pull_then_list(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMVISION_CACHE", str(tmp_path))
    runner = CliRunner()
    listed = runner.invoke(app, ["list"])
    assert listed.exit_code == 0 and "efficientnet-lite0" in listed.output and "nanodet-m" in listed.output
    assert " no " in listed.output
    pulled = runner.invoke(app, ["pull", "efficientnet-lite0"])
    assert pulled.exit_code == 0, pulled.output
    assert "verified" in pulled.output
    listed = runner.invoke(app, ["list"])
    row = next(line for line in listed.output.splitlines() if line.startswith("efficientnet-lite0"))
    assert "yes" in row and "18.8 MB" in row and "Apache-2.0" in row
    bad = runner.invoke(app, ["pull", "yolo9000"])
    assert bad.exit_code == 1 and "unknown model 'yolo9000'" in bad.output
