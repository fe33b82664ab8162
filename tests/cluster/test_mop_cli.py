"""``streamvision train``: the typer sub-app on real data, and its errors."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from streamvision.cli.train import app


def test_train_from_a_yaml_table_and_export(ray_cluster, tmp_path, monkeypatch):
    from operators.datasets import write_digit_patches

    write_digit_patches(tmp_path / "db", per_class=100)
    mst = tmp_path / "mst.yaml"
    mst.write_text("archs: [head_linear, head_mlp]\ncompile_params: {lr: [0.01]}\nfit_params: {batch_size: [32]}\n")
    monkeypatch.setenv("STREAMVISION_CACHE", str(tmp_path / "cache"))
    result = CliRunner().invoke(app, [
        "--mst", str(mst), "--data", str(tmp_path / "db"), "--workers", "2", "--epochs", "2",
        "--out", str(tmp_path / "run"), "--export", "digits", "--store", str(tmp_path / "db"),
    ])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert sum("epoch" in line for line in lines) == 4  # 2 models x 2 epochs reported
    summary = json.loads(lines[-1])
    assert summary["val_acc"] > 0.6
    assert summary["model"] == str(tmp_path / "cache" / "models" / "digits.pt")
    from operators.stores.lineage_store import LineageStore

    with LineageStore(tmp_path / "db", read_only=True) as store:
        saved = [json.loads(v) for _, v in store.scan("models", b"best\x00")]
    assert saved and saved[0]["best"] == summary["best"]


def test_bad_table_is_a_clear_error_not_a_traceback(tmp_path):
    mst = tmp_path / "mst.yaml"
    mst.write_text("archs: [cnn_small]\ncompile_params: {lr: [-0.1]}\n")
    result = CliRunner().invoke(app, ["--mst", str(mst), "--data", "fashion-mnist:100"])
    assert result.exit_code == 2
    assert "learning rate must be > 0" in result.output
    one = tmp_path / "one.yaml"
    one.write_text("rows:\n  - {arch: cnn_small}\n")
    result = CliRunner().invoke(app, ["--mst", str(one), "--data", "fashion-mnist:100", "--workers", "2"])
    assert result.exit_code == 2
    assert "1 configuration(s) for 2 workers" in result.output
