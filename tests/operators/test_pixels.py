"""Backtrace to pixels on the real vtest.avi and real photos: a patch's crop, cut again from its
frame's original, is bit-exact with the crop the pipeline made."""

from __future__ import annotations

import base64
import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

import streamvision
from operators.base import OperatorContext
from operators.detectors.nanodet import NanoDetDetector
from operators.featurizers.color_histogram import ColorHistogram
from operators.producers import FrameProducer
from operators.sinks.store_sink import StoreSink
from operators.sources.image_folder import ImageFolderSource
from operators.sources.kafka_source import KafkaSource
from operators.sources.video_file import VideoFileSource
from operators.stores.lineage_store import LineageStore
from operators.stores.pixels import frame_image
from streamvision.cli.app import app
from streamvision.core.errors import InputError
from streamvision.core.lineage import FrameKeyCodec, KafkaKey
from tests.operators.kafka_ingest import ingest_whole_frames


@pytest.fixture(scope="module")
def detected(tmp_path_factory, vtest_path):
    """NanoDet-m detections of every 50th frame of vtest.avi, featurized and stored; the crops
    the pipeline made, by detection id."""
    data = tmp_path_factory.mktemp("pixels") / "objects"
    detector, hist = NanoDetDetector(), ColorHistogram(bins=4, grid=2)
    for op in (detector, hist):
        op.setup(OperatorContext())
    sink = StoreSink(data=str(data), featurizer=hist.spec())
    crops: dict[int, np.ndarray] = {}
    features: dict[int, int] = {}  # feature patch id -> detection id
    source = VideoFileSource(path=str(vtest_path), every=50)
    source.open()
    for frames in source.read(8):
        patches = detector.process(frames)
        crops.update({int(i): c for i, c in zip(patches.ids, patches.crops)})
        vectors = hist.process(patches)
        features.update({int(v): int(p) for v, p in zip(vectors.ids, vectors.parent_ids)})
        sink.write(vectors)
    source.close()
    sink.close()
    assert len(crops) > 20
    return data, crops, features


def test_every_patch_crop_is_bit_exact_from_the_encoded_original(detected):
    data, crops, features = detected
    with streamvision.connect(data) as sv:
        for feature, detection in features.items():
            got = sv.pixels(feature)
            assert got.dtype == np.uint8 and np.array_equal(got, crops[detection]), feature
        chain = sv.lineage(next(iter(features)))
    assert chain[-1]["pixels"] == "source"


def test_a_frame_far_from_a_keyframe_decodes_as_a_sequential_read(vtest_path):
    sequential = {}
    source = VideoFileSource(path=str(vtest_path), start=30.0, end=32.0)
    source.open()
    for batch in source.read(32):
        sequential.update({int(n): im for n, im in zip(batch.frame_no, batch.images)})
    source.close()
    seeker = VideoFileSource(path=str(vtest_path), verify=False)
    for number in (301, 307, 315, 319):
        assert np.array_equal(seeker.frame(number), sequential[number]), number
    with pytest.raises(InputError, match="has no frame 999999"):
        seeker.frame(999_999)
    seeker.close()


def test_photos_and_cli_crop(tmp_path, sample_dir):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("messi5.jpg", "fruits.jpg"):
        (folder / name).write_bytes((sample_dir / name).read_bytes())
    data = tmp_path / "photos-data"
    detector, hist = NanoDetDetector(), ColorHistogram(bins=4, grid=2)
    for op in (detector, hist):
        op.setup(OperatorContext())
    sink = StoreSink(data=str(data), featurizer=hist.spec())
    source = ImageFolderSource(path=str(folder))
    source.open()
    made = {}
    for frames in source.read(1):
        patches = detector.process(frames)
        vectors = hist.process(patches)
        made.update({int(v): c for v, c in zip(vectors.ids, patches.crops)})
        sink.write(vectors)
    source.close()
    sink.close()
    assert made
    pid, expected = next(iter(made.items()))
    out = tmp_path / "crop.png"
    result = CliRunner().invoke(app, ["crop", str(pid), "--data", str(data), "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["format"] == "source"
    assert np.array_equal(cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB), expected)


def test_missing_pixels_are_clear_errors(detected, tmp_path):
    data, _, features = detected
    with LineageStore(data / "lineage", read_only=True) as store:
        with pytest.raises(InputError, match="not kept"):
            frame_image(store, KafkaKey("cams", 0, 12, 0).encode())
    with streamvision.connect(data) as sv:
        with pytest.raises(InputError, match="no patch with id 12345"):
            sv.pixels(12345)
        doc = sv.answer("pixels", patch_id=next(iter(features)))
        assert set(doc) >= {"format", "frame", "bbox", "shape", "png"} and base64.b64decode(doc["png"])[:4] == b"\x89PNG"


def test_kafka_frames_are_kept_loaded_by_time_and_backtraced_exactly(broker, vtest_path, tmp_path):
    """H.264 segments and JPEG frame files from the real broker, kept by the sink (no Ray)."""
    with FrameProducer(broker.bootstrap_servers, "kept", partitions=1) as producer:
        producer.produce(str(vtest_path), camera="seg", kind="h264", segment_seconds=1.0, limit=30)
        producer.produce(str(vtest_path), camera="jpg", kind="jpeg", limit=12)
    source = KafkaSource(topic="kept", bootstrap_servers=broker.bootstrap_servers, group_id="g-kept", until_end=True,
                         session_timeout_ms=6000, heartbeat_interval_ms=1000)
    data = tmp_path / "kept"
    decoded = ingest_whole_frames(source, data)
    assert len(decoded) == 42
    with streamvision.connect(data) as sv:
        for pid in sv.store.row_ids():
            key = bytes.fromhex(sv.store.patch(pid)["frame_key"])
            assert np.array_equal(sv.pixels(pid), decoded[key][1])  # bit-exact: the kept message, decoded again
            assert sv.lineage(pid)[-1]["pixels"] == ("segments" if sv.store.patch(pid)["camera"] == "seg"
                                                     else "frame-file")
        # messages in the order of their sv-ts, then their frames (keys sort so)
        seg = sorted((k, w) for k, (w, _) in decoded.items() if FrameKeyCodec.decode(k).offset < 3)
        everything = [k for b in sv.load("seg") for k in b.keys]
        assert everything == [k for k, _ in seg]
        times = sorted(w for _, w in seg)
        start, end = times[5], times[17]
        part = list(sv.load("seg", time_range=(start, end), every=3))
        assert [k for b in part for k in b.keys] == [k for k, w in seg if start <= w < end][::3]
        assert all(np.array_equal(im, decoded[k][1]) for b in part for k, im in zip(b.keys, b.images))
        assert sum(len(b) for b in sv.load("jpg")) == 12
        with pytest.raises(InputError, match="neither a video file nor a camera"):
            list(sv.load("nobody"))
