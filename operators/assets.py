"""Sample data fetched from Debian's package registry and cached, checksums verified.

The real sample video ``vtest.avi`` (768x576, 795 frames, 10 fps: pedestrians, a van and
a car, fixed camera) and about 70 sample photos come from Debian's ``opencv-doc``
package. :func:`sample_data_dir` downloads the package once with ``apt-get download``,
extracts ``examples/data`` into the user's cache directory and checks the video's
SHA-256; later calls are offline.

The cache lives in ``$STREAMVISION_CACHE``, else ``$XDG_CACHE_HOME/streamvision``, else
``~/.cache/streamvision``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from streamvision.core.errors import MissingAssetError

OPENCV_DOC_PACKAGE = "opencv-doc"
_DATA_PREFIX = "./usr/share/doc/opencv-doc/examples/data/"
#: SHA-256 of vtest.avi as shipped in opencv-doc 4.x.
VTEST_SHA256 = "45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf"


def cache_dir() -> Path:
    """The root of StreamVision's download cache (created on first use)."""
    env = os.environ.get("STREAMVISION_CACHE")
    if env:
        root = Path(env)
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "streamvision"
    root.mkdir(parents=True, exist_ok=True)
    return root


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _apt_download(package: str, into: Path) -> Path:
    """``apt-get download package`` into ``into``; runs ``apt-get update`` once if needed."""
    if shutil.which("apt-get") is None:
        raise MissingAssetError(
            f"apt-get is not available to fetch Debian's {package!r}. Download the .deb by hand "
            f"and run `python -m operators.assets FILE.deb`."
        )
    for attempt in range(2):
        done = subprocess.run(["apt-get", "download", package], cwd=into, capture_output=True, text=True)
        debs = sorted(into.glob(f"{package}_*.deb"))
        if done.returncode == 0 and debs:
            return debs[-1]
        if attempt == 0:
            subprocess.run(["apt-get", "update"], capture_output=True, text=True)
    raise MissingAssetError(
        f"could not download Debian package {package!r}: {done.stderr.strip()[-500:]}\n"
        f"Run `apt-get update && apt-get download {package}` and then "
        f"`python -m operators.assets {package}_*.deb`."
    )


def extract_deb(deb: Path, prefix: str, target: Path) -> list[Path]:
    """Extract the files under ``prefix`` (e.g. ``"./usr/share/x/"``) of a .deb into ``target``.

    Pure Python (no dpkg): reads the ``ar`` archive, then its ``data.tar.*`` member. Paths
    are kept relative to ``prefix``; members that would escape ``target`` are skipped.

    Returns:
        The extracted files.
    """
    with open(deb, "rb") as fh:
        if fh.read(8) != b"!<arch>\n":
            raise MissingAssetError(f"{deb} is not a Debian package")
        while True:
            header = fh.read(60)
            if len(header) < 60:
                raise MissingAssetError(f"{deb} has no data.tar member")
            name = header[:16].decode().strip().rstrip("/")
            size = int(header[48:58].decode().strip())
            if name.startswith("data.tar"):
                payload = tempfile.SpooledTemporaryFile(max_size=1 << 28)
                payload.write(fh.read(size))
                payload.seek(0)
                break
            fh.seek(size + (size % 2), os.SEEK_CUR)
    written: list[Path] = []
    with tarfile.open(fileobj=payload, mode="r:*") as tar:
        for member in tar:
            if member.isfile() and member.name.startswith(prefix):
                rel = Path(member.name[len(prefix):])
                if ".." in rel.parts:
                    continue
                out = target / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(out, "wb") as dst:  # type: ignore[union-attr]
                    shutil.copyfileobj(src, dst)
                written.append(out)
    return written


def install_from_deb(deb: Path, prefix: str, target: Path, checksums: dict[str, str]) -> Path:
    """Extract ``prefix`` of ``deb`` and move it into ``target``, once every file in ``checksums``
    is present with the expected SHA-256 (a failed check leaves ``target`` as it was)."""
    staging = Path(tempfile.mkdtemp(dir=cache_dir(), prefix=".staging-"))
    try:
        extract_deb(deb, prefix, staging)
        for name, expected in checksums.items():
            path = staging / name
            if not path.exists():
                raise MissingAssetError(f"{deb} has no {name}")
            actual = sha256_of(path)
            if actual != expected:
                raise MissingAssetError(f"{name} checksum mismatch: {actual} != {expected}")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def import_deb(deb: Path) -> Path:
    """Install the sample data from an already downloaded opencv-doc .deb into the cache."""
    return install_from_deb(deb, _DATA_PREFIX, cache_dir() / "opencv-samples", {"vtest.avi": VTEST_SHA256})


def sample_data_dir() -> Path:
    """The directory of opencv-doc's sample data, fetched and verified on first use."""
    target = cache_dir() / "opencv-samples"
    video = target / "vtest.avi"
    if video.exists() and sha256_of(video) == VTEST_SHA256:
        return target
    with tempfile.TemporaryDirectory() as tmp:
        return import_deb(_apt_download(OPENCV_DOC_PACKAGE, Path(tmp)))


def vtest_video() -> Path:
    """Path of the cached, verified ``vtest.avi``."""
    return sample_data_dir() / "vtest.avi"


def sample_photo(name: str) -> Path:
    """Path of one of opencv-doc's sample photos, e.g. ``"orange.jpg"``."""
    path = sample_data_dir() / name
    if not path.exists():
        raise MissingAssetError(f"no sample photo {name!r} in {sample_data_dir()}")
    return path


if __name__ == "__main__":
    import sys

    print(import_deb(Path(sys.argv[1])) if len(sys.argv) > 1 else sample_data_dir())
