"""Similarity joins: the pruned index join equals the nested loop, pair for pair."""

from __future__ import annotations

import numpy as np
import pytest

from operators.index.joins import index_join, nested_loop_join, nested_loop_self_join, self_join
from streamvision.core.errors import InputError


def clustered(rng: np.random.Generator, n: int, d: int, clusters: int, noise: float) -> np.ndarray:
    centers = rng.standard_normal((clusters, d)).astype(np.float32)
    x = centers[rng.integers(0, clusters, n)] / np.sqrt(d) + noise * rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def assert_same(got, expect):
    assert len(got[0]) == len(expect[0])
    np.testing.assert_array_equal(got[0], expect[0])
    np.testing.assert_array_equal(got[1], expect[1])
    np.testing.assert_allclose(got[2], expect[2], atol=1e-5)


@pytest.mark.parametrize("t", [0.3, 0.8, 0.95])
def test_self_join_equals_nested_loop(t):
    rng = np.random.default_rng(4)
    x = clustered(rng, 700, 48, 25, 0.02)
    ids = rng.choice(10**15, 700, replace=False).astype(np.int64) + 1
    got = self_join(ids, x, t)
    assert_same(got, nested_loop_self_join(ids, x, t))
    assert (got[0] < got[1]).all() and (got[2] > t).all()


def test_join_of_two_collections_equals_nested_loop_on_random_vectors():
    rng = np.random.default_rng(5)
    a = rng.standard_normal((300, 16)).astype(np.float32)  # not normalized: the bound still holds
    b = rng.standard_normal((400, 16)).astype(np.float32)
    for t in (2.0, 6.0):
        got = index_join(np.arange(300), a, np.arange(1000, 1400), b, t)
        assert_same(got, nested_loop_join(np.arange(300), a, np.arange(1000, 1400), b, t))
        assert len(got[0]) > 0


def test_pruning_does_not_change_the_result():
    rng = np.random.default_rng(6)
    x = clustered(rng, 500, 32, 10, 0.03)
    ids = np.arange(1, 501)
    one_cell = self_join(ids, x, 0.9, nlist=1)
    for nlist in (5, 40, 500):
        assert_same(self_join(ids, x, 0.9, nlist=nlist), one_cell)


def test_bad_join_input():
    x = np.eye(4, dtype=np.float32)
    with pytest.raises(InputError, match="unique"):
        self_join(np.array([1, 1, 2, 3]), x, 0.5)
    with pytest.raises(InputError, match="NaN"):
        index_join(np.arange(4), np.full((4, 4), np.nan, np.float32), np.arange(4), x, 0.5)
    with pytest.raises(InputError, match="must be"):
        index_join(np.arange(4), x, np.arange(4), np.eye(5, dtype=np.float32)[:4], 0.5)
    with pytest.raises(InputError, match="finite"):
        index_join(np.arange(4), x, np.arange(4), x, float("nan"))
    empty = index_join(np.zeros(0, np.int64), np.zeros((0, 4), np.float32), np.arange(4), x, 0.5)
    assert all(len(part) == 0 for part in empty)
