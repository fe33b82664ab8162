"""A folder of images as a stream of frame batches.

Images are read in name order with OpenCV; consecutive images of one size go in one
batch (a batch holds frames of one size). Each image is frame ``i`` of source ``folder``,
with lineage key ``(path_of_image, 0)``.
"""

from __future__ import annotations

from pathlib import Path
import os
from typing import Iterator

import cv2
import numpy as np

from operators.base import Source
from streamvision.core.errors import InputError
from streamvision.core.frames import FrameBatch
from streamvision.core.lineage import FileKey
from streamvision.core.types import FrameType

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


#: Largest encoded query image accepted (bytes) and largest decoded one (pixels).
MAX_IMAGE_BYTES = 16 * 1024 * 1024
MAX_IMAGE_PIXELS = 8192 * 8192
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_IMAGE_PIXELS))  # read by OpenCV at its first decode


def decode_image(data: bytes, *, max_bytes: int = MAX_IMAGE_BYTES, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode an encoded image (JPEG, PNG, ...) from untrusted bytes as ``(h, w, 3)`` uint8 RGB.

    OpenCV checks the size in the image's own header against ``OPENCV_IO_MAX_IMAGE_PIXELS``
    (set here to :data:`MAX_IMAGE_PIXELS` unless the environment sets it) before it allocates.

    Raises:
        InputError: too many bytes or pixels, or not a readable image.
    """
    if len(data) > max_bytes:
        raise InputError(f"the image has {len(data)} bytes, more than the limit of {max_bytes}")
    if not data:
        raise InputError("the image is empty")
    buf = np.frombuffer(data, np.uint8)
    try:
        bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise InputError(f"not a readable image of at most {max_pixels} pixels: {exc.msg or exc}") from exc
    if bgr is None or bgr.shape[0] * bgr.shape[1] > max_pixels:
        raise InputError(f"not a readable image of at most {max_pixels} pixels")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_image(path: str | Path) -> np.ndarray:
    """Read one image file as ``(h, w, 3)`` uint8 RGB; raise :class:`InputError` if unreadable."""
    data = np.fromfile(str(path), np.uint8) if Path(path).is_file() else None
    if data is None:
        raise InputError(f"image not found: {path}")
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise InputError(f"{path} is not a readable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class ImageFolderSource(Source):
    """Read every image of a folder (not recursive).

    Args:
        path: the folder.
        camera: camera id (defaults to the folder path).
        skip_unreadable: skip files that are not images instead of failing.
    """

    name = "image_folder"

    def __init__(self, *, path: str, camera: str | None = None, skip_unreadable: bool = False) -> None:
        self.path = str(path)
        self.camera = camera or self.path
        self.skip_unreadable = skip_unreadable
        self._files: list[Path] = []
        self.skipped: list[str] = []

    def output_type(self) -> FrameType:
        """Frames of any size."""
        return FrameType()

    def open(self) -> None:
        """List the folder's images; raise :class:`InputError` if there are none."""
        folder = Path(self.path)
        if not folder.is_dir():
            raise InputError(f"image folder not found: {self.path}")
        self._files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self._files:
            raise InputError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {self.path}")

    def read(self, max_batch: int) -> Iterator[FrameBatch]:
        """Yield batches of same-size images, at most ``max_batch`` each."""
        if not self._files:
            self.open()
        pending: list[tuple[Path, np.ndarray]] = []
        for path in self._files:
            try:
                image = read_image(path)
            except InputError:
                if not self.skip_unreadable:
                    raise
                self.skipped.append(str(path))
                continue
            if pending and (image.shape != pending[0][1].shape or len(pending) == max_batch):
                yield self._batch(pending)
                pending = []
            pending.append((path, image))
        if pending:
            yield self._batch(pending)

    def _batch(self, items: list[tuple[Path, np.ndarray]]) -> FrameBatch:
        n = len(items)
        return FrameBatch(
            keys=[FileKey(str(p), 0).encode() for p, _ in items],
            cameras=[self.camera] * n,
            frame_no=np.zeros(n, np.int64),
            pts=np.zeros(n, np.float64),
            wall_time=np.asarray([p.stat().st_mtime for p, _ in items], np.float64),
            images=np.stack([img for _, img in items]),
        )
