"""The OCR patch generator (PP-OCRv4 from ``rapidocr-onnxruntime``) on real photographs.

The photos are Debian opencv-doc's samples (``operators.assets.sample_photo``), looked at by
eye before writing these tests:

- ``box.png`` (324x223, grey): a photographed box of Italian almond cookies. Along the left
  edge run vertical lines "Crisp Almond Cookies" and "Product of Italy"; in the middle the
  vertical label "PAN DUCALE" over "ATRI"; along the right edge "Peso Netto 250 g e NET WT 8.8 OZ".
- ``box_in_scene.png`` (512x384, grey): the same box in a cluttered scene, next to a box of
  rice labelled "BASMATI" (right of the centre) and a book by Olivier Faugeras.
- ``imageTextN.png`` (556x257): a page of a printed book, 13 lines, the first beginning
  "technical details are too complex".
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

import streamvision

from operators import registry
from operators.assets import sample_photo
from operators.base import OperatorContext
from operators.detectors.ocr import OCRDetector
from operators.featurizers.color_histogram import ColorHistogram
from operators.index.sharded import STORE_DIRNAME
from operators.models.ppocr import detection_size
from operators.sinks.store_sink import StoreSink
from operators.stores.lineage_store import LineageStore
from streamvision.core.errors import ConfigError
from streamvision.core.frames import FrameBatch
from streamvision.core.lineage import FileKey, patch_id


def photo_batch(name: str) -> FrameBatch:
    """A one-frame batch of a sample photo (RGB), keyed by its file like an image folder source."""
    path = sample_photo(name)
    image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    return FrameBatch(keys=[FileKey(str(path), 0).encode()], cameras=[Path(name).stem], frame_no=np.array([0]),
                      pts=np.array([0.0]), wall_time=np.zeros(1), images=image[None])


@pytest.fixture(scope="module")
def ocr() -> OCRDetector:
    op = OCRDetector()
    op.setup(OperatorContext(num_threads=2))
    yield op
    op.teardown()


@pytest.fixture(scope="module")
def box(ocr):
    frames = photo_batch("box.png")
    return frames, ocr.process(frames)


def texts_of(patches) -> list[str]:
    return [t.lower() for t in patches.extra["text"]]


def test_reads_the_words_printed_on_a_photographed_box(ocr, box):
    frames, patches = box
    texts = texts_of(patches)
    assert len(patches) >= 4
    almond = next(i for i, t in enumerate(texts) if "almond" in t)
    assert "cookies" in texts[almond]
    x0, y0, x1, y1 = patches.bboxes[almond]
    assert x1 < 60 and (y1 - y0) > 3 * (x1 - x0)  # the vertical line along the box's left edge
    assert any("ducale" in t for t in texts)
    assert any("atri" in t for t in texts)
    assert any("8.8" in t and "oz" in t for t in texts)
    h, w = frames.size
    b = patches.bboxes
    assert np.all(b[:, 0] >= 0) and np.all(b[:, 1] >= 0) and np.all(b[:, 2] <= w) and np.all(b[:, 3] <= h)
    assert np.all(b[:, 2] > b[:, 0]) and np.all(b[:, 3] > b[:, 1])
    assert set(patches.labels) == {"text"} and set(patches.models) == {ocr.model}
    assert np.all(patches.scores >= ocr.score_threshold) and np.all(patches.scores <= 1.0)
    for i, crop in enumerate(patches.crops):  # the crop is the frame's pixels of the box
        bw, bh = np.ceil(b[i, 2]) - np.floor(b[i, 0]), np.ceil(b[i, 3]) - np.floor(b[i, 1])
        assert crop.shape == (bh, bw, 3)


def test_patches_carry_lineage_and_deterministic_ids(ocr, box):
    frames, patches = box
    key = frames.keys[0]
    assert patches.frame_keys == [key] * len(patches)
    assert np.all(patches.parent_ids == 0) and set(patches.cameras) == {"box"}
    assert patches.ids.tolist() == [patch_id(key, ocr.model, j) for j in range(len(patches))]
    again = ocr.process(photo_batch("box.png"))  # reprocessing the same frame: same ids, same text
    assert again.ids.tolist() == patches.ids.tolist() and again.extra["text"] == patches.extra["text"]
    row = next(patches.rows())
    assert row.ref == (0, key) and row.meta["text"] == patches.extra["text"][0] and row.meta["label"] == "text"


def test_reads_a_label_in_a_cluttered_scene(ocr):
    frames = photo_batch("box_in_scene.png")
    patches = ocr.process(frames)
    basmati = [i for i, t in enumerate(texts_of(patches)) if "basmati" in t]
    assert len(basmati) == 1
    x0, y0, x1, y1 = patches.bboxes[basmati[0]]
    assert 256 < (x0 + x1) / 2 < 384 and 180 < (y0 + y1) / 2 < 280  # on the rice box


def test_work_per_frame_is_bounded():
    page = photo_batch("imageTextN.png")
    few = OCRDetector(max_boxes=3)
    few.setup(OperatorContext(num_threads=2))
    patches = few.process(page)
    assert 1 <= len(patches) <= 3
    assert all(len(t) > 20 for t in patches.extra["text"])  # whole printed lines of the page
    # the detector never sees more than max_side on a side, whatever the frame size
    assert detection_size(2160, 3840, 736, 1280) == (704, 1280)
    assert max(detection_size(4000, 300, 736, 1280)) <= 1280
    assert detection_size(223, 324, 736, 1280) == (736, 1056)  # small photos are upscaled for small text


def test_text_lands_in_the_store_through_the_featurizer_and_sink(ocr, box, tmp_path):
    frames, patches = box
    texts = dict(zip(patches.ids.tolist(), patches.extra["text"]))
    features = ColorHistogram(bins=4, grid=1).process(patches)
    sink = StoreSink(data=str(tmp_path / "data"))
    sink.open()
    assert sink.write(features) == len(patches)
    sink.close()
    with LineageStore(tmp_path / "data" / STORE_DIRNAME, read_only=True) as store:
        for fid, parent in zip(features.ids.tolist(), features.parent_ids.tolist()):
            feature = store.patch(fid)
            assert feature is not None and feature["text"] == texts[parent] and feature["parent"] == parent
            pixel = store.patch(parent)  # the text-line patch the vector was made from
            assert pixel is not None and pixel["text"] == texts[parent]
            assert pixel["label"] == "text" and pixel["model"] == ocr.model
            chain = store.lineage(fid)
            assert [link.get("patch_id") for link in chain[:2]] == [fid, parent]
            assert chain[-1]["frame"] == {"kind": "file", "file": str(sample_photo("box.png")), "frame_no": 0}
        almond = [pid for pid, t in texts.items() if "almond" in t.lower()]
        assert store.patch(almond[0])["text"].lower().startswith("crisp almond")
    # DeepLens q5 through SQL: the line holding a word, by its text
    with streamvision.connect(tmp_path / "data") as sv:
        rows = sv.sql("SELECT parent_id, text, bbox FROM patches WHERE text ILIKE :word", word="%almond%").to_pylist()
    assert [r["parent_id"] for r in rows] == almond and rows[0]["text"] == texts[almond[0]]


def test_whole_frames_and_empty_batches_keep_the_text_column(ocr, box):
    frames, patches = box
    with_frame = OCRDetector(whole_frames=True)
    with_frame.setup(OperatorContext(num_threads=2))
    out = with_frame.process(frames)
    assert out.labels[0] == "" and out.extra["text"][0] == "" and out.extra["text"][1:] == patches.extra["text"]
    assert with_frame.output_type(with_frame.input_type()).label_domain == frozenset({"text", ""})
    empty = ocr.process(FrameBatch(keys=[], cameras=[], frame_no=np.zeros(0, np.int64), pts=np.zeros(0),
                                   wall_time=np.zeros(0), images=np.zeros((0, 8, 8, 3), np.uint8), meta={"m": [1]}))
    assert len(empty) == 0 and empty.extra == {"text": []} and empty.meta == {"m": [1]}


def test_registered_for_pipelines_and_options_validated():
    assert "ocr" in registry.names()
    built = registry.build("ocr", {"max_boxes": 10, "max_side": 960})
    assert isinstance(built, OCRDetector) and built.max_boxes == 10 and built.name == "ocr"
    with pytest.raises(ConfigError, match="max_boxes must be >= 1"):
        registry.build("ocr", {"max_boxes": 0})
    with pytest.raises(ConfigError, match="min_side <= max_side"):
        OCRDetector(min_side=1024, max_side=512)
    with pytest.raises(ConfigError, match="box_threshold"):
        OCRDetector(box_threshold=1.5)
    with pytest.raises(ConfigError, match="bad options"):
        registry.build("ocr", {"language": "en"})
    with pytest.raises(RuntimeError, match="setup"):
        OCRDetector().process(photo_batch("box.png"))
