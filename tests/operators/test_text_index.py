"""The text index (DeepLens q5): trigram postings of OCR lines, pushed down from SQL.

Real PP-OCRv4 output on four of opencv-doc's photos (``box.png`` reads "Crisp Almond Cookies",
``box_in_scene.png`` "BASMATI", ``board.jpg`` "FOR HOME OR OFFICE USE", ``right.jpg`` "BASIC
ELECTRONICS"; see ``test_detector_ocr.py``), featurized with the colour histogram into a
collection. Every pushed statement is checked against the same statement with the pushdown
defeated (``OR false``: DuckDB then reads every patch's metadata) and against a Python scan of
the OCR lines.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import rocksdict

import streamvision
from operators.base import OperatorContext
from operators.detectors.ocr import OCRDetector
from operators.featurizers.color_histogram import ColorHistogram
from operators.index.sharded import STORE_DIRNAME
from operators.sinks.store_sink import StoreSink
from operators.stores.lineage_store import COLUMN_FAMILIES, LineageStore
from tests.operators.test_detector_ocr import photo_batch

PHOTOS = ("box.png", "box_in_scene.png", "board.jpg", "right.jpg")


@pytest.fixture(scope="module")
def ocr_dir(tmp_path_factory) -> tuple[Path, dict[int, str]]:
    """A collection of the photos' OCR lines, and ``row id -> text`` of every row."""
    data = tmp_path_factory.mktemp("text") / "data"
    ocr, featurizer = OCRDetector(), ColorHistogram(bins=4, grid=1)
    ocr.setup(OperatorContext(num_threads=2))
    sink = StoreSink(data=str(data), featurizer=featurizer.spec())
    sink.open()
    texts: dict[int, str] = {}
    for name in PHOTOS:
        features = featurizer.process(ocr.process(photo_batch(name)))
        sink.write(features)
        texts.update(zip(features.ids.tolist(), features.extra["text"]))
    sink.close()
    ocr.teardown()
    return data, texts


def _pushed_and_rescanned(data: Path, statement: str) -> tuple[dict, dict]:
    """The answer documents of ``statement`` and of the same with its pushdown defeated."""
    head, order = statement.split(" ORDER BY ")
    with streamvision.connect(data) as sv:
        return (sv.answer("sql", sql=statement),
                sv.answer("sql", sql=f"{head} OR false ORDER BY {order}"))


@pytest.mark.parametrize("predicate, holds", [
    ("text ILIKE '%almond%'", lambda t: "almond" in t.lower()),
    ("text ILIKE '%ALMOND cook%'", lambda t: "almond cook" in t.lower()),
    ("text ILIKE 'crisp%'", lambda t: t.lower().startswith("crisp")),
    ("text ILIKE '%b_sma%'", lambda t: "basma" in t.lower()),
    ("text LIKE '%Almond%'", lambda t: "Almond" in t),
    ("text LIKE '%almond%'", lambda t: "almond" in t),  # case-sensitive: the line reads "Almond"
    ("text ILIKE '%basic%' AND text ILIKE '%electr%'", lambda t: "basic" in t.lower() and "electr" in t.lower()),
])
def test_pushed_text_predicates_return_what_the_rescan_returns(ocr_dir, predicate, holds):
    data, texts = ocr_dir
    pushed, rescanned = _pushed_and_rescanned(
        data, f"SELECT patch_id, text FROM patches WHERE {predicate} ORDER BY patch_id")
    truth = sorted([pid, t] for pid, t in texts.items() if holds(t))
    assert pushed["rows"] == rescanned["rows"] == truth
    assert pushed["plan"][0]["detail"] == "metadata index seeks (no vectors, no pixels)"
    assert rescanned["plan"][0]["detail"] == "scan of every patch's metadata"
    assert len(truth) <= pushed["candidates"] < rescanned["candidates"] == len(texts)


def test_the_first_image_holding_a_string_and_explain(ocr_dir):
    data, texts = ocr_dir
    statement = ("SELECT camera, frame_no, text FROM patches WHERE text ILIKE '%almond%' AND label = 'text' "
                 "ORDER BY ts, patch_id LIMIT 1")
    pushed, rescanned = _pushed_and_rescanned(data, statement)
    assert pushed["rows"] == rescanned["rows"] == [["box", 0, next(t for t in texts.values() if "Almond" in t)]]
    with streamvision.connect(data) as sv:
        plan = sv.sql("EXPLAIN " + statement).to_pylist()
    assert plan[0] == {"step": "candidates", "detail": "metadata index seeks (no vectors, no pixels)"}
    assert plan[1] == {"step": "where", "detail": "label='text' text holds 'almond' (trigram index)"}
    assert "ILIKE '%almond%'" in plan[2]["detail"]  # DuckDB still applies the pattern as written


def test_a_literal_shorter_than_three_characters_scans(ocr_dir):
    data, texts = ocr_dir
    with streamvision.connect(data) as sv:
        doc = sv.answer("sql", sql="SELECT patch_id FROM patches WHERE text ILIKE '%oz%' ORDER BY patch_id")
        assert sv.store.ids_by_text("oz") is None
    assert doc["plan"][0]["detail"] == "scan of every patch's metadata" and doc["candidates"] == len(texts)
    assert doc["rows"] == [[pid] for pid in sorted(texts) if "oz" in texts[pid].lower()] != []


def test_a_string_no_line_holds_returns_no_rows_from_no_candidates(ocr_dir):
    data, _ = ocr_dir
    with streamvision.connect(data) as sv:
        doc = sv.answer("sql", sql="SELECT count(*) AS n FROM patches WHERE text ILIKE '%pistachio%'")
        assert sv.store.ids_by_text("pistachio") == []
    assert doc["rows"] == [[0]] and doc["candidates"] == 0


def test_the_index_holds_every_row_with_text_and_no_pixel_patch(ocr_dir):
    data, texts = ocr_dir
    with LineageStore(data / STORE_DIRNAME, read_only=True) as store:
        assert store.text_indexed
        for word in ("almond", "Cookies", "basmati", "OFFICE", "electronics"):
            found = store.ids_by_text(word)
            assert found is not None and set(found) >= {pid for pid, t in texts.items() if word.lower() in t.lower()}
            assert set(found) <= set(texts)  # rows only: not the OCR line patches behind the features
            assert all(store.patch(pid)["parent"] for pid in found)


def test_imported_rows_with_text_are_indexed(ocr_dir, tmp_path):
    data, texts = ocr_dir
    with LineageStore(data / STORE_DIRNAME, read_only=True) as store:
        ids = sorted(texts)
        vectors = store.vectors(ids)
    with LineageStore(tmp_path / "imported") as store:
        store.write_vectors(np.array(ids), vectors, [{"text": texts[pid], "camera": "import"} for pid in ids])
        assert store.ids_by_text("Almond Cook") == [pid for pid in ids if "almond cook" in texts[pid].lower()]


def _drop_text_index(store_dir: Path) -> None:
    """Make ``store_dir`` what a version before the text index wrote: no ``by_text`` family."""
    options = rocksdict.Options(raw_mode=True)
    families = {name: rocksdict.Options(raw_mode=True) for name in COLUMN_FAMILIES}
    db = rocksdict.Rdict(str(store_dir), options, column_families=families)
    db.drop_column_family("by_text")
    db.close()
    assert "by_text" not in rocksdict.Rdict.list_cf(str(store_dir))


def test_a_data_directory_without_the_text_index_opens_scans_then_gets_it(ocr_dir, tmp_path):
    data, texts = ocr_dir
    old = tmp_path / "old"
    shutil.copytree(data, old)
    _drop_text_index(old / STORE_DIRNAME)
    statement = "SELECT patch_id FROM patches WHERE text ILIKE '%almond%' ORDER BY patch_id"
    truth = [[pid] for pid in sorted(texts) if "almond" in texts[pid].lower()]
    with streamvision.connect(old) as sv:  # a reader cannot create the family: it scans
        doc = sv.answer("sql", sql=statement)
        assert not sv.store.text_indexed and sv.store.ids_by_text("almond") is None
    assert doc["rows"] == truth and doc["plan"][0]["detail"] == "scan of every patch's metadata"
    with LineageStore(old / STORE_DIRNAME) as store:  # a writer builds the index from the stored rows
        assert store.text_indexed
    with streamvision.connect(old) as sv:
        doc = sv.answer("sql", sql=statement)
    assert doc["rows"] == truth and doc["plan"][0]["detail"] == "metadata index seeks (no vectors, no pixels)"
    assert doc["candidates"] < len(texts)
