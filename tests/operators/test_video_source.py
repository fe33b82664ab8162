"""The PyAV video source on the real vtest.avi: sampling options and bad input."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from operators.sources.video_file import VideoFileSource
from streamvision.core.errors import InputError
from streamvision.core.lineage import FileKey, FrameKeyCodec


def _frame_numbers(source: VideoFileSource, max_batch: int = 32) -> list[int]:
    source.open()
    try:
        return [int(n) for batch in source.read(max_batch) for n in batch.frame_no]
    finally:
        source.close()


def test_time_range_batches_and_lineage_keys(vtest_path):
    source = VideoFileSource(path=str(vtest_path), start=10.0, end=12.0)
    source.open()
    batches = list(source.read(8))
    source.close()
    assert [len(b) for b in batches] == [8, 8, 4]
    first = batches[0]
    assert first.images.shape == (8, 576, 768, 3) and first.images.dtype == np.uint8
    assert first.frame_no.tolist() == list(range(100, 108))
    assert np.allclose(first.pts, np.arange(100, 108) / 10)
    assert FrameKeyCodec.decode(first.keys[0]) == FileKey(str(vtest_path), 100)
    assert first.images.std() > 10  # real pixels, not a blank frame


def test_sampling_options(vtest_path):
    assert _frame_numbers(VideoFileSource(path=str(vtest_path), every=100)) == list(range(0, 795, 100))
    at_2fps = _frame_numbers(VideoFileSource(path=str(vtest_path), fps=2.0, end=5.0))
    assert at_2fps == [0, 5, 10, 15, 20, 25, 30, 35, 40, 45]
    keyframes = _frame_numbers(VideoFileSource(path=str(vtest_path), keyframes_only=True))
    assert keyframes[0] == 0 and 1 < len(keyframes) < 50


def test_output_type_knows_the_size_once_open(vtest_path):
    source = VideoFileSource(path=str(vtest_path))
    assert source.output_type().height is None
    source.open()
    assert (source.output_type().height, source.output_type().width) == (576, 768)
    source.close()


def write_bad_video(kind: str, folder, video):
    """A bad input of ``kind``: missing, empty, text named .mp4, or a truncated real video."""
    path = folder / {"missing": "missing.avi", "empty": "empty.mp4", "text": "notes.mp4", "truncated": "cut.avi"}[kind]
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is a text file, not a video\n" * 20)
    elif kind == "truncated":
        path.write_bytes(video.read_bytes()[:3_000_000])
    return path


@pytest.mark.parametrize("kind, message", [
    ("missing", "not found"), ("empty", "empty"), ("text", "not a readable video"), ("truncated", "truncated"),
])
def test_bad_input_is_refused_at_open(tmp_path, vtest_path, kind, message):
    path = write_bad_video(kind, tmp_path, vtest_path)
    with pytest.raises(InputError, match=message):
        VideoFileSource(path=str(path)).open()


def test_bad_options():
    with pytest.raises(InputError, match="every"):
        VideoFileSource(path="v.avi", every=0)
    with pytest.raises(InputError, match="time range"):
        VideoFileSource(path="v.avi", start=5, end=2)


def test_image_folder_source(sample_dir, tmp_path):
    from operators.sources.image_folder import ImageFolderSource

    for name in ("orange.jpg", "apple.jpg", "baboon.jpg"):
        shutil.copy(sample_dir / name, tmp_path / name)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(InputError, match="broken.png is not a readable image"):
        list(ImageFolderSource(path=str(tmp_path)).read(8))
    source = ImageFolderSource(path=str(tmp_path), skip_unreadable=True)
    batches = list(source.read(8))
    assert sum(len(b) for b in batches) == 3
    assert source.skipped == [str(tmp_path / "broken.png")]
    (tmp_path / "sub").mkdir()
    with pytest.raises(InputError, match="no images"):
        ImageFolderSource(path=str(tmp_path / "sub")).open()
