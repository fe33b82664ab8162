"""Labeled data for model selection: Fashion-MNIST from Debian, Parquet tables, store patches."""

from __future__ import annotations

import numpy as np
import pytest

from operators.assets import cache_dir, sha256_of
from operators.datasets import (
    FASHION_MNIST_CLASSES, FASHION_MNIST_SHA256, LabeledData, fashion_mnist, fashion_mnist_dir, from_store,
    import_fashion_deb, load_data, read_table, write_digit_patches, write_table,
)
from streamvision.core.errors import InputError, MissingAssetError


def test_fashion_mnist_is_the_real_debian_data():
    directory = fashion_mnist_dir()
    assert directory.is_relative_to(cache_dir())
    for name, digest in FASHION_MNIST_SHA256.items():
        assert sha256_of(directory / name) == digest
    train, test = fashion_mnist("train"), fashion_mnist("test")
    assert train.features.shape == (60000, 28, 28) and test.features.shape == (10000, 28, 28)
    assert train.features.dtype == np.uint8 and train.classes == FASHION_MNIST_CLASSES
    assert np.bincount(train.labels).tolist() == [6000] * 10
    assert np.bincount(test.labels).tolist() == [1000] * 10
    # real images: trousers (label 1) are taller than wide, bags and shirts are not blank
    trousers = train.features[train.labels == 1][:200].astype(float).mean(0)
    assert trousers[:, 10:18].mean() > 2 * trousers[:, :4].mean()
    assert fashion_mnist("test", limit=10).labels.tolist() == test.labels[:10].tolist()


def test_a_file_that_is_not_a_deb_is_refused(tmp_path):
    bogus = tmp_path / "dataset-fashion-mnist_1_all.deb"
    bogus.write_bytes(b"not an ar archive")
    with pytest.raises(MissingAssetError, match="not a Debian package"):
        import_fashion_deb(bogus)


def test_parquet_table_round_trips(tmp_path):
    data = fashion_mnist("test", limit=300)
    path = write_table(data, tmp_path / "t" / "fmnist.parquet")
    back = read_table(path)
    assert np.array_equal(back.features, data.features) and back.features.dtype == np.uint8
    assert np.array_equal(back.labels, data.labels) and back.classes == data.classes
    import pyarrow.parquet as pq

    assert pq.read_table(path).column("class").to_pylist()[:3] == [data.classes[i] for i in data.labels[:3]]
    assert load_data(str(path)).input_shape == (28, 28)


def test_labeled_patches_come_back_from_the_store(tmp_path):
    written = write_digit_patches(tmp_path / "db", per_class=30)
    assert written == 300
    data = from_store(tmp_path / "db")
    assert data.features.shape == (300, 100) and data.features.dtype == np.float32
    assert data.classes == tuple(f"digit-{d}" for d in range(10))
    assert np.bincount(data.labels).tolist() == [30] * 10
    # real handwriting: ones have less ink than eights
    ink = [data.features[data.labels == d].sum(1).mean() for d in (1, 8)]
    assert ink[0] < ink[1]
    two = from_store(tmp_path / "db", labels=["digit-3", "digit-7"])
    assert len(two) == 60 and two.classes == ("digit-3", "digit-7")


def test_bad_data_is_a_clear_error(tmp_path):
    write_digit_patches(tmp_path / "db", per_class=1)
    with pytest.raises(InputError, match="need labeled vector patches"):
        from_store(tmp_path / "db", labels=["nothing"])
    with pytest.raises(InputError, match="cannot load labeled data"):
        load_data("imagenet")
    with pytest.raises(InputError, match="bad row count"):
        load_data("fashion-mnist:lots")
    with pytest.raises(InputError, match="labels must lie"):
        LabeledData(np.zeros((2, 3), np.float32), np.array([0, 5]), ("a", "b"))
