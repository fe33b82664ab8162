"""The MOP driver: partition once, plan with Cerebro's rule, run the plan on worker actors,
checkpoint every model every epoch, resume after a failed worker or driver.

Layout of ``out_dir``::

    run.json                          seed, workers, models, data fingerprint (checked on resume)
    checkpoints/<key>/epoch_<e>.pt    weights + optimizer state + that epoch's metrics and sub-epochs
    schedule.parquet                  every sub-epoch of the run (wall-clock start/end, worker, bytes of
                                      state received, attempt), gathered from the checkpoints
    results.parquet                   one row per model per epoch
    learning_curves.png
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from cluster.mop.results import plot_curves, write_records
from cluster.mop.scheduler import PlanDispatcher, SubEpoch, make_plan
from cluster.mop.worker import MopWorker
from operators.training.architectures import build_model, forward_macs
from operators.training.mst import ModelSelectionTable
from operators.training.step import ModelState, init_state, load_checkpoint, save_checkpoint, state_nbytes, sub_seed
from operators.datasets import LabeledData
from streamvision.core.errors import ConfigError

log = logging.getLogger(__name__)
EpochCallback = Callable[[dict[str, Any]], None]
_LIVENESS_S = 5.0


@dataclass
class FitResult:
    """What :func:`fit_multiple` returns.

    Attributes:
        out_dir: the run directory.
        results: one dict per model per epoch (the rows of ``results.parquet``).
        schedule: one dict per sub-epoch of the run, resumed calls included (``schedule.parquet``).
        best: mst key of the model with the highest final validation accuracy.
        classes: the class names (index = label).
        input_shape: the shape of one example.
        restarts: how many times this call restarted workers after a failure.
        wall_s: wall-clock seconds of this call.
        data_bytes: bytes of the training data (shipped once, partitioned over workers).
        state_bytes_moved: bytes of model state sent to workers over the run.
    """

    out_dir: Path
    results: list[dict[str, Any]]
    schedule: list[dict[str, Any]]
    best: str
    classes: tuple[str, ...]
    input_shape: tuple[int, ...]
    restarts: int = 0
    wall_s: float = 0.0
    data_bytes: int = 0
    state_bytes_moved: int = 0
    paths: dict[str, Path] = field(default_factory=dict)

    def checkpoint(self, key: str, epoch: int | None = None) -> Path:
        """Path of a model's checkpoint (its last epoch by default)."""
        if epoch is None:
            epoch = max(r["epoch"] for r in self.results if r["model"] == key)
        return _checkpoint_path(self.out_dir, key, epoch)


def _checkpoint_path(out_dir: Path, key: str, epoch: int) -> Path:
    return out_dir / "checkpoints" / key / f"epoch_{epoch:04d}.pt"


def worker_name(out_dir: Path, index: int) -> str:
    """The Ray actor name of worker ``index`` of the run in ``out_dir``."""
    tag = hashlib.sha256(str(Path(out_dir).resolve()).encode()).hexdigest()[:10]
    return f"mop-{tag}-w{index}"


def _fingerprint(data: LabeledData) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(data.features).tobytes())
    digest.update(np.ascontiguousarray(data.labels).tobytes())
    return digest.hexdigest()[:16]


def _check_run(out_dir: Path, spec: dict[str, Any]) -> None:
    """Record the run's identity, or check that a resumed run matches it."""
    path = out_dir / "run.json"
    if path.exists():
        old = json.loads(path.read_text())
        diff = sorted(k for k in spec if old.get(k) != spec[k])
        if diff:
            raise ConfigError(f"{out_dir} holds a different run ({', '.join(diff)} differ); use another out_dir")
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec, indent=1))


def _last_done(out_dir: Path, key: str, epochs: int) -> int:
    """The last epoch whose checkpoint exists (contiguously from 1)."""
    done = 0
    while done < epochs and _checkpoint_path(out_dir, key, done + 1).exists():
        done += 1
    return done


def _costs(mst: ModelSelectionTable, input_shape: tuple[int, ...], num_classes: int,
           parts: list[np.ndarray]) -> dict[tuple[str, int], int]:
    """Sub-epoch cost estimates: 3 x forward MACs (forward + backward) x partition rows."""
    costs = {}
    for row in mst:
        macs = forward_macs(build_model(row.arch, input_shape, num_classes), input_shape)
        for w, part in enumerate(parts):
            costs[(row.key, w)] = max(1, 3 * macs * len(part))
    return costs


def _start_workers(out_dir: Path, part_refs: list[Any], val_ref: Any, num_classes: int, mst: ModelSelectionTable,
                   threads: int, use_gpu: bool) -> list[Any]:
    gpus = 0.0
    if use_gpu:
        available = ray.cluster_resources().get("GPU", 0.0)
        if available <= 0:
            raise ConfigError("use_gpu=True but the Ray cluster has no GPU")
        gpus = min(1.0, available / len(part_refs))
    configs = [row.to_json() for row in mst]
    workers = []
    for i, (x_ref, y_ref) in enumerate(part_refs):
        name = worker_name(out_dir, i)
        try:  # a worker left behind by a killed driver
            ray.kill(ray.get_actor(name))
        except ValueError:
            pass
        workers.append(MopWorker.options(name=name, num_cpus=threads, num_gpus=gpus, max_restarts=0).remote(
            i, x_ref, y_ref, val_ref[0], val_ref[1], num_classes, configs, threads, "cuda" if use_gpu else "cpu"))
    ray.get([w.rows.remote() for w in workers])
    return workers


def _check_alive(workers: list[Any]) -> None:
    """Raise ``RayActorError`` if a worker died (``ray.wait`` alone may wait on its lost outputs)."""
    for ref in [w.rows.remote() for w in workers]:
        try:
            ray.get(ref, timeout=_LIVENESS_S)
        except GetTimeoutError:
            pass  # busy machine, not a dead worker


def _stop_workers(workers: list[Any]) -> None:
    for worker in workers:
        ray.kill(worker)


def fit_multiple(
    data: LabeledData,
    mst: ModelSelectionTable,
    epochs: int,
    workers: int,
    *,
    validation: LabeledData,
    out_dir: str | Path,
    use_gpu: bool = False,
    seed: int = 0,
    threads_per_worker: int = 1,
    max_failures: int = 3,
    on_epoch_end: EpochCallback | None = None,
) -> FitResult:
    """Train every configuration of ``mst`` for ``epochs`` epochs with model hopper parallelism.

    The training data is shuffled once (``seed``) and split into ``workers`` partitions,
    one per worker actor, which keeps it in memory for the whole run. Models hop between
    workers following Cerebro's randomized rule (see :mod:`cluster.mop.scheduler`). After
    each model's epoch its state and metrics are checkpointed in ``out_dir``; calling again
    with the same ``out_dir`` resumes from the checkpoints (more epochs may be asked for).
    A worker that dies is restarted and the run resumes from the checkpoints, up to
    ``max_failures`` times.

    Args:
        on_epoch_end: called in the driver with each model's epoch metrics, after its checkpoint.

    Raises:
        ConfigError: fewer configurations than workers, bad epochs, too little data,
            mismatched classes, a different run in ``out_dir``, or ``use_gpu`` without a GPU.
    """
    start_time = time.time()
    mst.check_workers(workers)
    if epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {epochs}")
    if len(data) < workers:
        raise ConfigError(f"{len(data)} training rows cannot be split over {workers} workers")
    if validation.classes != data.classes or validation.input_shape != data.input_shape:
        raise ConfigError("validation data must have the same classes and example shape as the training data")
    out_dir = Path(out_dir)
    num_classes = len(data.classes)
    for row in mst:  # fail fast on an architecture that cannot read this data
        build_model(row.arch, data.input_shape, num_classes)
    _check_run(out_dir, {"seed": seed, "workers": workers, "models": mst.keys, "data": _fingerprint(data),
                         "validation": _fingerprint(validation), "classes": list(data.classes)})

    order = np.random.default_rng(seed).permutation(len(data))
    parts = np.array_split(order, workers)
    plan = make_plan(mst.keys, _costs(mst, data.input_shape, num_classes, parts), workers, epochs, seed)
    part_refs = [(ray.put(data.features[p]), ray.put(data.labels[p])) for p in parts]
    val_ref = (ray.put(validation.features), ray.put(validation.labels))

    restarts = 0
    while True:
        workers_ = _start_workers(out_dir, part_refs, val_ref, num_classes, mst, threads_per_worker, use_gpu)
        try:
            _run_plan(out_dir, mst, plan, workers_, epochs, seed, data.input_shape, num_classes, restarts,
                      on_epoch_end)
            break
        except (RayActorError, RayTaskError) as exc:
            restarts += 1
            if restarts > max_failures:
                raise
            log.warning("MOP worker failed (%s); restarting workers and resuming from checkpoints", exc)
        finally:
            _stop_workers(workers_)

    saved = [load_checkpoint(_checkpoint_path(out_dir, key, e)) for key in mst.keys for e in range(1, epochs + 1)]
    results = [c["metrics"] for c in saved]
    schedule = sorted((hop for c in saved for hop in c["hops"]), key=lambda h: h["start"])
    paths = {
        "results": write_records(results, out_dir / "results.parquet"),
        "schedule": write_records(schedule, out_dir / "schedule.parquet"),
        "curves": plot_curves(results, out_dir / "learning_curves.png"),
    }
    final = [r for r in results if r["epoch"] == epochs]
    best = max(final, key=lambda r: (r["val_acc"], -r["val_loss"]))["model"]
    return FitResult(out_dir, results, schedule, best, data.classes, data.input_shape, restarts,
                     time.time() - start_time, data.nbytes, sum(r["bytes_in"] for r in schedule), paths)


def _run_plan(out_dir: Path, mst: ModelSelectionTable, plan: list[SubEpoch], workers: list[Any], epochs: int,
              seed: int, input_shape: tuple[int, ...], num_classes: int, attempt: int,
              on_epoch_end: EpochCallback | None) -> None:
    """Run the not yet checkpointed part of the plan, a sub-epoch per free worker as workers come
    free (:class:`PlanDispatcher`), and checkpoint each model's epoch as it ends."""
    done = {key: _last_done(out_dir, key, epochs) for key in mst.keys}
    states: dict[str, Any] = {}
    for key in mst.keys:
        if done[key]:
            states[key] = ray.put(load_checkpoint(_checkpoint_path(out_dir, key, done[key]))["state"])
        else:
            states[key] = ray.put(init_state(mst[key], input_shape, num_classes, sub_seed(seed, key, "init")))
    dispatcher = PlanDispatcher([task for task in plan if task.epoch > done[task.model]])
    records: dict[tuple[str, int], list[Any]] = {}
    running: dict[Any, tuple[SubEpoch, Any]] = {}  # record ref -> (sub-epoch, its output state ref)
    free = set(range(len(workers)))
    ended: list[tuple[SubEpoch, Any]] = []
    while True:
        for w in sorted(free):
            task = dispatcher.take(w)
            if task is None:
                continue
            states[task.model], record_ref = workers[w].train.options(num_returns=2).remote(
                task.model, states[task.model], task.epoch, task.hop,
                sub_seed(seed, task.model, task.epoch, task.worker), task.last)
            records.setdefault((task.model, task.epoch), []).append(record_ref)
            running[record_ref] = (task, states[task.model])
            free.discard(w)
        for task, state_ref in ended:  # after the workers have their next sub-epochs
            _end_epoch(out_dir, mst, task, records[(task.model, task.epoch)], state_ref, attempt, on_epoch_end)
        ended = []
        if not running:
            return
        ready, _ = ray.wait(list(running), num_returns=1, timeout=_LIVENESS_S)
        if not ready:
            _check_alive(workers)
            continue
        ready, _ = ray.wait(list(running), num_returns=len(running), timeout=0)
        for ref in ready:
            ray.get(ref)  # raises if the worker died or the sub-epoch failed
            task, state_ref = running.pop(ref)
            dispatcher.finish(task)
            free.add(task.worker)
            if task.last:
                ended.append((task, state_ref))


def _end_epoch(out_dir: Path, mst: ModelSelectionTable, task: SubEpoch, record_refs: list[Any], state_ref: Any,
               attempt: int, on_epoch_end: EpochCallback | None) -> None:
    """Checkpoint a model's state and metrics at the end of its epoch (``task`` was its last sub-epoch)."""
    key, epoch = task.model, task.epoch
    hops = ray.get(record_refs)
    state: ModelState = ray.get(state_ref)
    metrics = {
        "model": key, "arch": mst[key].arch, "epoch": epoch,
        "train_loss": float(sum(h["train_loss"] * h["rows"] for h in hops) / sum(h["rows"] for h in hops)),
        "val_loss": float(hops[-1]["val_loss"]), "val_acc": float(hops[-1]["val_acc"]),
        "time_s": float(sum(h["end"] - h["start"] for h in hops)),
        "bytes_moved": int(sum(h["bytes_in"] for h in hops)),
        "state_bytes": state_nbytes(state),
        "partitions": [int(h["worker"]) for h in hops],
    }
    save_checkpoint(_checkpoint_path(out_dir, key, epoch), {
        "state": state, "metrics": metrics, "config": mst[key].to_json(),
        "hops": [{**hop, "attempt": attempt} for hop in hops]})
    if on_epoch_end is not None:
        on_epoch_end(metrics)
