"""The Ray Tune baseline trains exactly what MOP trains: the same configurations, on the same
real Fashion-MNIST rows, to bit-identical weights (against sequential MOP, one worker)."""

from __future__ import annotations

import pytest
import torch

from cluster.mop.runner import fit_multiple
from cluster.mop.tune_baseline import fit_with_tune
from operators.datasets import fashion_mnist
from operators.training.mst import load_model_selection_table
from operators.training.step import load_checkpoint

pytestmark = pytest.mark.integration


def test_tune_and_mop_train_identical_configurations(ray_cluster, tmp_path):
    train, val = fashion_mnist("train", 1200), fashion_mnist("test", 300)
    mst = load_model_selection_table(["cnn_tiny", "mlp"], {"lr": [1e-3, 3e-3], "lr_decay": 0.5}, {"batch_size": [64]})
    tune = fit_with_tune(train, mst, 2, validation=val, out_dir=tmp_path / "tune", seed=7)
    mop = fit_multiple(train, mst, 2, 1, validation=val, out_dir=tmp_path / "mop", seed=7)

    assert tune.configs == {row.key: row.to_json() for row in mst}  # every row, as Tune passed it
    assert sorted((r["model"], r["epoch"]) for r in tune.results) == sorted((k, e) for k in mst.keys for e in (1, 2))
    for key in mst.keys:
        ours = load_checkpoint(mop.checkpoint(key))["state"]["model"]
        theirs = tune.final_state(key)["model"]
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[name], theirs[name]) for name in ours), key
    accs = {(r["model"], r["epoch"]): r["val_acc"] for r in tune.results}
    assert all(accs[(r["model"], r["epoch"])] == r["val_acc"] for r in mop.results)
    assert tune.best == mop.best
    assert tune.data_bytes_per_trial == train.nbytes + val.nbytes
