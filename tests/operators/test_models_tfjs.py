"""The TF.js graph loader: real NanoDet graph, batch independence, refused ops, dequantization."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from operators.models.store import ensure
from operators.models.tfjs import SUPPORTED_OPS, load_graph_model, read_weights
from streamvision.errors import InputError


@pytest.fixture(scope="module")
def nanodet_json():
    return ensure("nanodet-m") / "nanodet.json"


def test_nanodet_graph_outputs_and_batch_independence(nanodet_json):
    graph = load_graph_model(nanodet_json).eval()
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 3, 416, 416)).astype(np.float32))
    with torch.no_grad():
        both = graph(x)
        first = graph(x[:1])
    shapes = [tuple(o.shape) for o in both]
    assert shapes == [(2, 2704, 80), (2, 676, 80), (2, 169, 80), (2, 2704, 44), (2, 676, 44), (2, 169, 44)]
    for a, b in zip(both, first):
        torch.testing.assert_close(a[:1], b, atol=1e-4, rtol=1e-4)
    scores = both[0]
    assert float(scores.min()) >= 0.0 and float(scores.max()) <= 1.0  # sigmoid inside the graph


def test_unknown_op_is_refused_by_name(nanodet_json, tmp_path):
    model = json.loads(nanodet_json.read_text())
    node = next(n for n in model["modelTopology"]["node"] if n["op"] == "LeakyRelu")
    node["op"] = "Einsum"
    (tmp_path / "model.json").write_text(json.dumps(model))
    (tmp_path / "nanodet.bin").symlink_to(nanodet_json.parent / "nanodet.bin")
    with pytest.raises(InputError, match="unsupported op.*Einsum"):
        load_graph_model(tmp_path / "model.json")
    assert "Einsum" not in SUPPORTED_OPS


def test_quantized_weights_are_dequantized(tmp_path):
    values = np.array([0.5, -2.0, 3.25], np.float32)
    q = np.array([0, 128, 255], np.uint8)
    (tmp_path / "w.bin").write_bytes(values.astype("<f2").tobytes() + q.tobytes() + values.tobytes())
    manifest = [{
        "paths": ["w.bin"],
        "weights": [
            {"name": "half", "shape": [3], "dtype": "float32", "quantization": {"dtype": "float16"}},
            {"name": "byte", "shape": [3], "dtype": "float32",
             "quantization": {"dtype": "uint8", "scale": 0.1, "min": -1.0}},
            {"name": "full", "shape": [1, 3], "dtype": "float32"},
        ],
    }]
    weights = read_weights(tmp_path / "model.json", manifest)
    np.testing.assert_array_equal(weights["half"], values)
    np.testing.assert_allclose(weights["byte"], [-1.0, 11.8, 24.5], rtol=1e-6)
    assert weights["full"].shape == (1, 3)
