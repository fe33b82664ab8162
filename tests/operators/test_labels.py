"""User labels in the store's RocksDB: who set them and when, across restarts; the CLI; training
data cut from the labelled patches of a collection (opencv-doc's real handwritten digits)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from operators.datasets import from_collection, write_digit_patches
from operators.index.sharded import STORE_DIRNAME
from operators.stores.labels import UserLabels
from operators.stores.lineage_store import LineageStore
from streamvision.cli.app import app
from streamvision.core.errors import InputError


@pytest.fixture()
def collection(tmp_path):
    """A data directory whose store holds 20 real digits per class as vector patches."""
    write_digit_patches(tmp_path / STORE_DIRNAME, per_class=20)
    return tmp_path


def _ids(data, digit: str) -> list[int]:
    with LineageStore(data / STORE_DIRNAME, read_only=True) as store:
        return sorted(store.ids_by_label(f"digit-{digit}"))


def test_labels_survive_restarts_with_who_and_when(collection):
    ones, sevens = _ids(collection, "1"), _ids(collection, "7")
    with LineageStore(collection / STORE_DIRNAME) as store:
        assert UserLabels(store).set(ones[:10], "stroke", by="ana", at=1000.0) == 10
        UserLabels(store).set(sevens[:10], "corner", by="ben", at=1001.0)
    with LineageStore(collection / STORE_DIRNAME) as store:  # a restart: a new process would see the same
        labels = UserLabels(store)
        assert labels.get(ones[0]) == {"label": "stroke", "by": "ana", "at": 1000.0}
        assert labels.get(ones[15]) is None
        assert labels.names() == {"stroke": 10, "corner": 10}
        labels.set([ones[0]], "corner", by="cy", at=1002.0)  # relabelled: moves between names, keeps history
        assert labels.names() == {"stroke": 9, "corner": 11}
        assert ones[0] in labels.ids("corner") and ones[0] not in labels.ids("stroke")
        assert [h["by"] for h in labels.history(ones[0])] == ["ana", "cy"]
    with LineageStore(collection / STORE_DIRNAME, read_only=True) as store:
        assert UserLabels(store).labelled()[ones[0]] == "corner"


def test_bad_labels_and_unknown_patches_change_nothing(collection):
    ones = _ids(collection, "1")
    with LineageStore(collection / STORE_DIRNAME) as store:
        labels = UserLabels(store)
        with pytest.raises(InputError, match="no patch with id 12345"):
            labels.set([ones[0], 12345], "stroke")
        for bad in ("", "a\x00b", "x" * 200):
            with pytest.raises(InputError, match="label must be"):
                labels.set([ones[0]], bad)
        assert labels.labelled() == {}


def test_cli_labels_and_shows_history(collection):
    ones, sevens = _ids(collection, "1"), _ids(collection, "7")
    runner = CliRunner()
    done = runner.invoke(app, ["label", *map(str, ones[:3]), "--as", "stroke", "--data", str(collection), "--by", "ana"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["labelled"] == 3
    runner.invoke(app, ["label", str(sevens[0]), "--as", "corner", "--data", str(collection)])
    shown = runner.invoke(app, ["label", str(ones[0]), "--show", "--data", str(collection)])
    doc = json.loads(shown.output)
    assert doc["label"]["label"] == "stroke" and doc["label"]["by"] == "ana" and len(doc["history"]) == 1
    refused = runner.invoke(app, ["label", "99999", "--as", "stroke", "--data", str(collection)])
    assert refused.exit_code != 0 and "no patch with id 99999" in str(refused.exception or refused.output)


def test_training_data_is_the_labelled_selection_of_the_collection(collection):
    ones, sevens, zeros = _ids(collection, "1"), _ids(collection, "7"), _ids(collection, "0")
    with LineageStore(collection / STORE_DIRNAME) as store:
        labels = UserLabels(store)
        labels.set(ones, "one", by="t")
        labels.set(sevens, "seven", by="t")
        labels.set(zeros, "zero", by="t")
        expected = store.vectors(sorted(ones + sevens + zeros))
    data = from_collection(collection)
    assert data.classes == ("one", "seven", "zero") and len(data) == 60
    assert np.array_equal(data.features, expected)  # the stored vectors, as written
    assert np.bincount(data.labels).tolist() == [20, 20, 20]
    only = from_collection(collection, ids=ones[:5] + sevens[:5])  # an id selection (an SQL query's patch_id)
    assert len(only) == 10 and only.classes == ("one", "seven")
    by_where = from_collection(collection, where={"label": "digit-7"}, classes=("one", "seven"))
    assert len(by_where) == 20 and set(by_where.labels.tolist()) == {1}
    with pytest.raises(InputError, match="at least two classes"):
        from_collection(collection, where={"label": "digit-7"})
