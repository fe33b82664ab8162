"""Architectures, the model selection table and the deterministic training step, on real Fashion-MNIST."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from operators.training.architectures import EFFICIENTNET_LITE0_DIM, build_model, forward_macs, names
from operators.training.mst import ModelConfig, ModelSelectionTable, load_model_selection_table
from operators.training.step import (
    evaluate, init_state, load_checkpoint, save_checkpoint, state_nbytes, sub_seed, to_tensors, train_sub_epoch,
)
from operators.datasets import fashion_mnist
from streamvision.core.errors import ConfigError


@pytest.fixture(scope="module")
def fmnist():
    train, test = fashion_mnist("train", 2000), fashion_mnist("test", 500)
    return (to_tensors(train.features), torch.from_numpy(train.labels),
            to_tensors(test.features), torch.from_numpy(test.labels))


def _equal_states(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal_states(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_equal_states(x, y) for x, y in zip(a, b))
    return a == b


# ------------------------------------------------------------------ architectures
@pytest.mark.parametrize("name", [n for n in names() if not n.startswith("head")])
def test_image_architectures_give_class_logits(name):
    model = build_model(name, (28, 28), 10)
    assert model(torch.zeros(3, 28, 28)).shape == (3, 10)


@pytest.mark.parametrize("name", ["head_linear", "head_mlp"])
def test_heads_read_efficientnet_features(name):
    model = build_model(name, (EFFICIENTNET_LITE0_DIM,), 5)
    assert model(torch.zeros(4, EFFICIENTNET_LITE0_DIM)).shape == (4, 5)


def test_cnn_refuses_vectors_and_heads_refuse_images():
    with pytest.raises(ConfigError, match="grayscale images"):
        build_model("cnn_small", (1280,), 10)
    with pytest.raises(ConfigError, match="feature vectors"):
        build_model("head_linear", (28, 28), 10)


def test_cost_estimate_grows_with_width():
    macs = {n: forward_macs(build_model(n, (28, 28), 10), (28, 28)) for n in ("cnn_tiny", "cnn_small", "cnn_wide")}
    assert macs["cnn_tiny"] < macs["cnn_small"] < macs["cnn_wide"]
    # conv1 of cnn_tiny alone: 4 channels x 28 x 28 outputs x 9 taps
    assert macs["cnn_tiny"] > 4 * 28 * 28 * 9


# ------------------------------------------------------------------ model selection table
def test_grid_is_the_cross_product_with_stable_unique_keys():
    table = load_model_selection_table(
        ["cnn_tiny", "cnn_small"], {"optimizer": ["adam", "sgd"], "lr": [1e-3, 1e-2]}, {"batch_size": [32, 64]})
    assert len(table) == 16
    assert len(set(table.keys)) == 16
    again = load_model_selection_table(
        ["cnn_tiny", "cnn_small"], {"optimizer": ["adam", "sgd"], "lr": [1e-3, 1e-2]}, {"batch_size": [32, 64]})
    assert again.keys == table.keys
    assert table[table.keys[5]].arch == "cnn_tiny"


def test_explicit_rows_and_yaml_files(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("archs: [mlp, cnn_tiny]\ncompile_params: {lr: [0.001, 0.003]}\nfit_params: {batch_size: 64}\n")
    assert len(ModelSelectionTable.from_file(grid)) == 4
    rows = tmp_path / "rows.yaml"
    rows.write_text("rows:\n  - {arch: mlp, optimizer: sgd, lr: 0.05}\n  - {arch: cnn_small}\n")
    table = ModelSelectionTable.from_file(rows)
    assert [r.arch for r in table] == ["mlp", "cnn_small"]
    assert table.rows[0].optimizer == "sgd" and table.rows[1].lr == 1e-3


@pytest.mark.parametrize("build, message", [
    (lambda: load_model_selection_table(["resnet9000"], {"lr": [0.1]}), "unknown architecture 'resnet9000'"),
    (lambda: load_model_selection_table(["mlp"], {"lr": [-0.01]}), "learning rate must be > 0"),
    (lambda: load_model_selection_table(["mlp"], {"lr": [0]}), "learning rate must be > 0"),
    (lambda: load_model_selection_table(["mlp"], {"lr_decay": [1.5]}), r"lr_decay must be in \(0, 1\]"),
    (lambda: load_model_selection_table(["mlp"], {"lr_decay": [0]}), r"lr_decay must be in \(0, 1\]"),
    (lambda: load_model_selection_table(["mlp"], {"optimizer": ["lbfgs"]}), "unknown optimizer 'lbfgs'"),
    (lambda: load_model_selection_table(["mlp"], {"learning_rate": [0.1]}), r"unknown parameter\(s\) \['learning_rate'\]"),
    (lambda: load_model_selection_table(["mlp"], {"lr": [0.1]}, {"batch_size": [0]}), "batch_size must be >= 1"),
    (lambda: load_model_selection_table(["mlp"], {"lr": ["fast"]}), "lr must be a number"),
    (lambda: load_model_selection_table(["mlp", "mlp"]), "duplicate configurations"),
    (lambda: load_model_selection_table([]), "non-empty list"),
    (lambda: ModelSelectionTable.from_rows([{"lr": 0.1}]), "has no 'arch'"),
    (lambda: ModelSelectionTable.from_rows([{"arch": "mlp", "key": "mlp-00000000"}]), "does not match"),
])
def test_bad_configurations_are_clear_errors(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


def test_fewer_configurations_than_workers_is_an_error():
    table = load_model_selection_table(["mlp", "cnn_tiny"])
    table.check_workers(2)
    with pytest.raises(ConfigError, match="2 configuration\\(s\\) for 3 workers"):
        table.check_workers(3)


def test_table_round_trips_through_the_store(tmp_path):
    from operators.stores.lineage_store import LineageStore

    table = load_model_selection_table(["mlp", "cnn_tiny"], {"lr": [1e-3, 1e-2]})
    with LineageStore(tmp_path / "db") as store:
        table.save(store)
        loaded = ModelSelectionTable.from_store(store)
    assert sorted(loaded.keys) == sorted(table.keys)
    assert loaded[table.keys[0]] == table.rows[0]


# ------------------------------------------------------------------ training step
def test_same_seed_gives_bit_identical_weights(fmnist):
    x, y, _, _ = fmnist
    config = ModelConfig("cnn_tiny", optimizer="adam", lr=3e-3, batch_size=64)
    runs = []
    for _ in range(2):
        state = init_state(config, (28, 28), 10, seed=7)
        for part in range(2):
            state, _ = train_sub_epoch(config, state, x[part::2], y[part::2], 10, seed=sub_seed(7, "m", 1, part))
        runs.append(state)
    assert _equal_states(runs[0], runs[1])
    other = init_state(config, (28, 28), 10, seed=7)
    other, _ = train_sub_epoch(config, other, x[0::2], y[0::2], 10, seed=sub_seed(8, "m", 1, 0))
    assert not torch.equal(other["model"]["features.0.weight"], runs[0]["model"]["features.0.weight"])


def test_one_pass_learns_far_above_chance(fmnist):
    x, y, vx, vy = fmnist
    config = ModelConfig("cnn_small", optimizer="adam", lr=3e-3, batch_size=32)
    state = init_state(config, (28, 28), 10, seed=0)
    loss0, acc0 = evaluate(config, state, vx, vy, 10)
    state, train_loss = train_sub_epoch(config, state, x, y, 10, seed=1)
    loss1, acc1 = evaluate(config, state, vx, vy, 10)
    assert loss1 < loss0 and train_loss < loss0
    # 500 test images, 10 classes: chance is ~0.10; 0.65 is out of its reach
    assert acc1 > 0.65, (acc0, acc1)
    assert state["optimizer"]["state"], "the optimizer state (Adam moments) travels with the weights"
    assert state_nbytes(state) > state_nbytes({"model": state["model"]})


def test_lr_decay_sets_each_epochs_rate(fmnist):
    x, y, _, _ = fmnist
    config = ModelConfig("mlp", optimizer="sgd", lr=0.08, lr_decay=0.5)
    assert [config.lr_at(e) for e in (1, 2, 3)] == [0.08, 0.04, 0.02]
    state = init_state(config, (28, 28), 10, 0)
    for epoch in (1, 2, 3):
        state, _ = train_sub_epoch(config, state, x[:128], y[:128], 10, seed=epoch, epoch=epoch)
        assert state["optimizer"]["param_groups"][0]["lr"] == config.lr_at(epoch)
    constant = ModelConfig("mlp", optimizer="sgd", lr=0.08)
    assert constant.lr_at(3) == 0.08 and constant.key != config.key


def test_checkpoints_load_weights_only_and_round_trip(tmp_path, fmnist):
    x, y, _, _ = fmnist
    config = ModelConfig("mlp", optimizer="sgd", lr=0.05)
    state, _ = train_sub_epoch(config, init_state(config, (28, 28), 10, 0), x[:256], y[:256], 10, seed=3)
    path = save_checkpoint(tmp_path / "c" / "m.pt", {"state": state, "metrics": {"epoch": 1, "val_acc": 0.5}})
    loaded = load_checkpoint(path)
    assert _equal_states(loaded["state"], state) and loaded["metrics"]["epoch"] == 1
    assert not list(tmp_path.glob("c/*.tmp"))


def test_images_are_scaled_and_vectors_kept():
    images = np.array([[[0, 255]]], np.uint8)
    assert to_tensors(images).tolist() == [[[0.0, 1.0]]]
    vectors = np.array([[1.5, -2.0]], np.float32)
    assert to_tensors(vectors).tolist() == [[1.5, -2.0]]
