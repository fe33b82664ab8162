"""Model hopper parallelism on Ray: scheduling invariants, accuracy on real Fashion-MNIST,
bit-identical reproducibility, resume after a killed worker or driver, deployment."""

from __future__ import annotations

import random
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from cluster.mop.runner import fit_multiple, worker_name
from cluster.mop.scheduler import PlanDispatcher, check_plan, make_plan
from operators.training.mst import load_model_selection_table
from operators.training.step import load_checkpoint
from operators.datasets import fashion_mnist
from streamvision.core.errors import ConfigError


def _weights(result, key: str) -> dict[str, torch.Tensor]:
    return load_checkpoint(result.checkpoint(key))["state"]["model"]


def _same_weights(a, b, keys) -> bool:
    return all(all(torch.equal(_weights(a, k)[n], t) for n, t in _weights(b, k).items()) for k in keys)


def _no_overlap(spans: list[tuple[float, float]]) -> bool:
    spans = sorted(spans)
    return all(prev[1] <= nxt[0] for prev, nxt in zip(spans, spans[1:]))


# ------------------------------------------------------------------ the plan (no Ray)
@pytest.mark.parametrize("models, workers, epochs", [(2, 2, 1), (5, 2, 3), (8, 3, 2), (4, 4, 2)])
def test_plan_visits_every_pair_once_per_epoch_without_overlap(models, workers, epochs):
    keys = [f"m{i}" for i in range(models)]
    rng = random.Random(models * 10 + workers)
    cost = {(k, w): rng.randint(1, 50) for k in keys for w in range(workers)}
    plan = make_plan(keys, cost, workers, epochs, seed=3)
    check_plan(plan, keys, workers, epochs)
    for key in keys:  # a model's epochs are in order, each ends with its `last` visit
        visits = [t for t in plan if t.model == key]
        assert [t.epoch for t in sorted(visits, key=lambda t: t.start)] == sorted(t.epoch for t in visits)
        assert sum(t.last for t in visits) == epochs
    assert make_plan(keys, cost, workers, epochs, seed=3) == plan


def test_plan_order_depends_on_the_seed_and_keeps_workers_busy():
    keys = [f"m{i}" for i in range(8)]
    cost = {(k, w): 10 for k in keys for w in range(2)}
    orders = {tuple((t.model, t.worker) for t in make_plan(keys, cost, 2, 1, seed=s)) for s in range(5)}
    assert len(orders) > 1
    plan = make_plan(keys, cost, 2, 2, seed=0)
    assert max(t.end for t in plan) == 8 * 2 * 10  # equal costs, m >= p: no idle time at all


@pytest.mark.parametrize("seed", range(4))
def test_dispatcher_keeps_the_routes_and_never_idles_a_worker_that_has_work(seed):
    """Event simulation with real durations unlike the estimates (up to 3x off either way)."""
    keys, workers = [f"m{i}" for i in range(6)], 3
    rng = random.Random(seed)
    plan = make_plan(keys, {(k, w): 10 for k in keys for w in range(workers)}, workers, 3, seed=seed)
    dispatcher = PlanDispatcher(plan)
    clock, running, ran = 0.0, {}, []  # running: worker -> (task, end)
    while dispatcher.remaining or running:
        for w in range(workers):
            if w not in running and (task := dispatcher.take(w)) is not None:
                running[w] = (task, clock + 10 * rng.uniform(1 / 3, 3))
                ran.append((task, clock))
        for w in range(workers):  # work-conserving: a free worker has nothing it may start
            if w not in running:
                assert dispatcher.take(w) is None
        w = min(running, key=lambda k: running[k][1])
        task, clock = running.pop(w)
        dispatcher.finish(task)
    for key in keys:  # each model ran its planned route, in order
        assert [t for t, _ in ran if t.model == key] == [t for t in plan if t.model == key]
    assert len(ran) == len(plan) == len(set(t for t, _ in ran))


# ------------------------------------------------------------------ real runs
@pytest.fixture(scope="module")
def fmnist_run(ray_cluster, tmp_path_factory):
    """4 configurations, 2 workers, 2 epochs on 6000 real training / 1000 test images."""
    train, val = fashion_mnist("train", 6000), fashion_mnist("test", 1000)
    mst = load_model_selection_table(["cnn_tiny", "cnn_small"], {"lr": [1e-3, 3e-3]}, {"batch_size": [64]})
    out = tmp_path_factory.mktemp("fmnist")
    return fit_multiple(train, mst, 2, 2, validation=val, out_dir=out, seed=0), mst, train


def test_schedule_log_keeps_the_mop_invariants(fmnist_run):
    result, mst, train = fmnist_run
    log = pq.read_table(result.paths["schedule"]).to_pylist()
    assert len(log) == len(mst) * 2 * 2
    for key in mst.keys:
        for epoch in (1, 2):
            visits = sorted(r["worker"] for r in log if r["model"] == key and r["epoch"] == epoch)
            assert visits == [0, 1], (key, epoch, visits)  # each partition exactly once per epoch
        assert _no_overlap([(r["start"], r["end"]) for r in log if r["model"] == key])  # one worker per model
    for worker in (0, 1):
        assert _no_overlap([(r["start"], r["end"]) for r in log if r["worker"] == worker])  # one model per worker
    rows = {r["worker"]: r["rows"] for r in log}
    assert rows[0] + rows[1] == len(train)
    # only model state moved: each hop carries the model's weights (and optimizer state), never data
    state_bytes = {r["model"]: r["state_bytes"] for r in result.results}
    assert all(0 < r["bytes_in"] <= state_bytes[r["model"]] for r in log)
    assert result.state_bytes_moved == sum(r["bytes_in"] for r in log)
    # a task-parallel run ships the whole training set to every trial
    assert result.state_bytes_moved < len(mst) * result.data_bytes


def test_a_small_configuration_beats_chance_by_far(fmnist_run):
    result, mst, _ = fmnist_run
    table = pq.read_table(result.paths["results"]).to_pylist()
    assert len(table) == len(mst) * 2
    assert {r["model"] for r in table} == set(mst.keys)
    best = max(r["val_acc"] for r in table if r["epoch"] == 2)
    # 1000 balanced test images of 10 classes: chance is 0.10, and 0.75 is out of its reach
    assert best > 0.75, table
    assert next(r for r in table if r["model"] == result.best and r["epoch"] == 2)["val_acc"] == best
    for key in mst.keys:  # training makes progress on every configuration
        loss = {r["epoch"]: r["train_loss"] for r in table if r["model"] == key}
        assert loss[2] < loss[1]
    assert result.paths["curves"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_best_model_is_deployed_as_a_dataflow_operator(fmnist_run, tmp_path, monkeypatch):
    from operators import registry
    from operators.base import OperatorContext
    from streamvision.core.lineage import FileKey
    from streamvision.api.mop import export_best
    from streamvision.core.patches import PatchBatch

    result, _, _ = fmnist_run
    test = fashion_mnist("test")
    images = test.features[5000:5400]  # not used for training or validation
    monkeypatch.setenv("STREAMVISION_CACHE", str(tmp_path / "cache"))
    export_best(result, name="fmnist-best")
    registry.register_path("mop_classifier", "operators.training.classifier:MopClassifier")
    op = registry.build("mop_classifier", {"model": "fmnist-best"})
    op.setup(OperatorContext())
    crops = [np.repeat(img[:, :, None], 3, axis=2) for img in images]  # RGB crops, as patches carry
    batch = PatchBatch.whole_frames(
        keys=[FileKey("t10k", i).encode() for i in range(len(crops))], cameras=["t10k"] * len(crops),
        frame_no=np.arange(len(crops)), pts=np.zeros(len(crops)), wall_time=np.zeros(len(crops)),
        size=(28, 28), operator="whole_frame", crops=crops)
    out = op.process(batch)
    truth = [test.classes[i] for i in test.labels[5000:5400]]
    accuracy = np.mean([a == b for a, b in zip(out.labels, truth)])
    assert accuracy > 0.7
    assert set(out.extra["classifier"]) == {result.best}
    assert op.output_type(op.input_type()).label_domain == frozenset(test.classes)
    with pytest.raises(ConfigError, match="unknown operator"):
        registry.build("mop_classifer", {"model": "fmnist-best"})


# ------------------------------------------------------------------ reproducibility and resume
SMALL = dict(epochs=3, workers=2, seed=11)


@pytest.fixture(scope="module")
def small(ray_cluster):
    train, val = fashion_mnist("train", 1500), fashion_mnist("test", 300)
    mst = load_model_selection_table(["cnn_tiny", "mlp"], {"lr": [3e-3]}, {"batch_size": [64]})
    return train, val, mst


@pytest.fixture(scope="module")
def reference(small, tmp_path_factory):
    train, val, mst = small
    return fit_multiple(train, mst, validation=val, out_dir=tmp_path_factory.mktemp("ref"), **SMALL)


def test_same_seed_gives_bit_identical_weights(small, reference, tmp_path):
    train, val, mst = small
    again = fit_multiple(train, mst, validation=val, out_dir=tmp_path / "again", **SMALL)
    assert _same_weights(reference, again, mst.keys)
    assert [r["val_acc"] for r in again.results] == [r["val_acc"] for r in reference.results]
    assert [r["partitions"] for r in again.results] == [r["partitions"] for r in reference.results]


def test_resume_after_a_killed_driver_and_a_killed_worker(small, reference, tmp_path):
    import ray

    train, val, mst = small
    out = tmp_path / "killed"

    class DriverDied(Exception):
        pass

    def die(metrics):
        raise DriverDied(metrics["model"])

    with pytest.raises(DriverDied):
        fit_multiple(train, mst, validation=val, out_dir=out, on_epoch_end=die, **SMALL)
    saved = sorted(p.name for p in out.glob("checkpoints/*/*.pt"))
    assert saved == ["epoch_0001.pt"]  # one model's first epoch was saved before the driver died
    with pytest.raises(ValueError):
        ray.get_actor(worker_name(out, 0))  # the driver took its workers down with it

    killed = []

    def kill_once(metrics):
        if not killed:
            killed.append(metrics)
            ray.kill(ray.get_actor(worker_name(out, 0)))

    resumed = fit_multiple(train, mst, validation=val, out_dir=out, on_epoch_end=kill_once, **SMALL)
    assert killed and resumed.restarts == 1
    assert _same_weights(reference, resumed, mst.keys)  # same weights as the run nothing interrupted
    log = pq.read_table(resumed.paths["schedule"]).to_pylist()
    assert {r["attempt"] for r in log} == {0, 1}
    for key in mst.keys:  # every (model, epoch) is logged once: nothing checkpointed was redone
        assert sorted((r["epoch"], r["worker"]) for r in log if r["model"] == key) == [
            (e, w) for e in range(1, SMALL["epochs"] + 1) for w in range(SMALL["workers"])]


def test_bad_runs_are_refused_before_any_work(small, reference):
    train, val, mst = small
    with pytest.raises(ConfigError, match="2 configuration\\(s\\) for 3 workers"):
        fit_multiple(train, mst, 1, 3, validation=val, out_dir=reference.out_dir / "x")
    with pytest.raises(ConfigError, match="holds a different run"):
        fit_multiple(train, mst, 3, 2, validation=val, out_dir=reference.out_dir, seed=99)
    vectors = load_model_selection_table(["head_linear", "head_mlp"])
    with pytest.raises(ConfigError, match="feature vectors"):
        fit_multiple(train, vectors, 1, 2, validation=val, out_dir=reference.out_dir / "y")
    with pytest.raises(ConfigError, match="epochs must be >= 1"):
        fit_multiple(train, mst, 0, 2, validation=val, out_dir=reference.out_dir / "z")


# ------------------------------------------------------------------ labeled patches from the store
def test_mop_on_labeled_patches_from_the_store(ray_cluster, tmp_path):
    from operators.base import OperatorContext
    from operators.stores.lineage_store import LineageStore
    from operators.training.classifier import MopClassifier
    from operators.training.mst import ModelSelectionTable
    from operators.datasets import from_store, write_digit_patches
    from streamvision.core.lineage import FileKey
    from streamvision.api.mop import export_best, fit_multiple as facade_fit, load_model_selection_table as facade_mst
    from streamvision.core.patches import PatchBatch

    write_digit_patches(tmp_path / "db", per_class=200)
    mst = facade_mst(["head_linear", "head_mlp"], {"lr": [1e-2]}, {"batch_size": [32]}, store=tmp_path / "db")
    result = facade_fit(tmp_path / "db", mst, 3, 2, validation=0.2, out_dir=tmp_path / "run", seed=1)
    final = {r["model"]: r["val_acc"] for r in result.results if r["epoch"] == 3}
    assert max(final.values()) > 0.8, final  # 400 held-out digits, chance 0.10
    with LineageStore(tmp_path / "db", read_only=True) as store:
        assert sorted(ModelSelectionTable.from_store(store).keys) == sorted(mst.keys)

    op = MopClassifier(model=str(export_best(result, path=tmp_path / "digits.pt")))
    assert op.input_type().dim == 100
    op.setup(OperatorContext())
    data = from_store(tmp_path / "db")
    n = len(data)
    frames = PatchBatch.whole_frames(
        keys=[FileKey("digits.png", i).encode() for i in range(n)], cameras=["digits.png"] * n,
        frame_no=np.arange(n), pts=np.zeros(n), wall_time=np.zeros(n), size=(20, 20), operator="cell")
    labeled = op.process(frames.derive(data.features, operator="downsample10"))
    accuracy = np.mean([p == data.classes[t] for p, t in zip(labeled.labels, data.labels)])
    assert accuracy > 0.8
    assert np.all((labeled.scores > 0) & (labeled.scores <= 1))
