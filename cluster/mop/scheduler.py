"""Cerebro's randomized scheduler for model hopper parallelism (no Ray in here).

Per epoch, every ``(model, worker)`` pair must run once; the pairs are queued in a seeded
shuffled order. Whenever a worker is idle it takes the first pending pair *for itself*
whose model is idle (and has finished its previous epoch). So a model is on one worker at
a time and a worker trains one model at a time.

The rule runs here on a deterministic clock: a sub-epoch's duration is its estimated cost
(rows x forward multiply-accumulates, integers), not the wall clock. The resulting plan,
and therefore every model's sequence of partitions and its final weights, depends only on
the seed. :class:`PlanDispatcher` then runs it work-conserving on the real clock: every
model follows its planned route, but a free worker starts the earliest-planned sub-epoch
that is due on it and whose model is free, instead of waiting for the one the estimates
put next. Estimates that are off cost no idle time, and the weights stay the plan's.

>>> plan = make_plan(["a", "b"], {("a", 0): 2, ("a", 1): 2, ("b", 0): 3, ("b", 1): 3}, 2, 1, seed=0)
>>> sorted((t.model, t.worker) for t in plan)
[('a', 0), ('a', 1), ('b', 0), ('b', 1)]
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from typing import Mapping, Sequence


@dataclass(frozen=True)
class SubEpoch:
    """One planned unit of work: ``model`` trains one pass over ``worker``'s partition.

    Attributes:
        model: mst key.
        epoch: 1-based epoch.
        worker: worker (= partition) index.
        hop: 0-based position of this visit within the model's epoch.
        last: whether this visit ends the model's epoch (validation and checkpoint follow).
        start, end: planned times on the deterministic clock.
    """

    model: str
    epoch: int
    worker: int
    hop: int
    last: bool
    start: int
    end: int


def _shuffled_pairs(models: Sequence[str], workers: int, epoch: int, seed: int) -> list[tuple[str, int]]:
    pairs = [(m, w) for m in models for w in range(workers)]
    random.Random(f"{seed}:{epoch}").shuffle(pairs)
    return pairs


def make_plan(
    models: Sequence[str],
    cost: Mapping[tuple[str, int], int],
    workers: int,
    epochs: int,
    seed: int,
) -> list[SubEpoch]:
    """Simulate the randomized rule for ``epochs`` epochs; return sub-epochs by start time.

    Args:
        models: mst keys.
        cost: ``(model, worker) -> positive integer`` duration estimate.
        workers: number of workers (partitions).
        epochs: number of epochs (numbered 1..epochs).
        seed: seeds the per-epoch shuffled order of pairs.
    """
    pending: list[tuple[int, str, int]] = [
        (e, m, w) for e in range(1, epochs + 1) for m, w in _shuffled_pairs(models, workers, e, seed)
    ]
    done_in_epoch = {(m, e): 0 for m in models for e in range(1, epochs + 2)}
    model_free = {m: 0 for m in models}
    model_epoch = {m: 1 for m in models}  # the epoch a model may currently work on
    worker_free = [0] * workers
    plan: list[SubEpoch] = []
    while pending:
        now = min(worker_free)
        progressed = False
        for w in range(workers):
            if worker_free[w] != now:
                continue
            for i, (e, m, pw) in enumerate(pending):
                if pw == w and model_free[m] <= now and model_epoch[m] == e:
                    hop = done_in_epoch[(m, e)]
                    end = now + int(cost[(m, w)])
                    plan.append(SubEpoch(m, e, w, hop, hop + 1 == workers, now, end))
                    done_in_epoch[(m, e)] = hop + 1
                    if hop + 1 == workers:
                        model_epoch[m] = e + 1
                    model_free[m] = end
                    worker_free[w] = end
                    del pending[i]
                    progressed = True
                    break
        if not progressed:
            # every worker free at `now` must wait for a model to come back
            later = [t for t in model_free.values() if t > now]
            wake = min(later)
            for w in range(workers):
                if worker_free[w] == now:
                    worker_free[w] = wake
    return sorted(plan, key=lambda t: (t.start, t.worker))


def check_plan(plan: Sequence[SubEpoch], models: Sequence[str], workers: int, epochs: int) -> None:
    """Raise ``AssertionError`` unless ``plan`` visits each pair once per epoch without overlaps."""
    seen = sorted((t.model, t.epoch, t.worker) for t in plan)
    assert seen == sorted((m, e, w) for m in models for e in range(1, epochs + 1) for w in range(workers))
    for key, items in (("model", models), ("worker", range(workers))):
        for item in items:
            spans = sorted((t.start, t.end) for t in plan if getattr(t, key) == item)
            assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), f"{key} {item} overlaps itself"


class PlanDispatcher:
    """Hands out a plan's sub-epochs to free workers as they come free (work-conserving).

    Each model's sub-epochs are taken in the plan's order (its route of partitions, epoch by
    epoch), one at a time; a free worker gets, among the models that are free and due on it
    next, the sub-epoch that the plan starts first. So a model is on one worker at a time, a
    worker trains one model at a time, and every model sees its partitions in the planned
    order whatever the real durations.

    >>> plan = make_plan(["a", "b"], {("a", 0): 2, ("a", 1): 2, ("b", 0): 3, ("b", 1): 3}, 2, 1, seed=0)
    >>> dispatcher = PlanDispatcher(plan)
    >>> first = [dispatcher.take(w) for w in (0, 1)]
    >>> sorted(t.model for t in first), dispatcher.take(0)
    (['a', 'b'], None)
    >>> dispatcher.finish(first[0]); dispatcher.take(first[0].worker) is None  # its model is due elsewhere
    True
    """

    def __init__(self, plan: Sequence[SubEpoch]) -> None:
        self._routes: dict[str, deque[SubEpoch]] = {}
        for task in sorted(plan, key=lambda t: (t.start, t.worker)):
            self._routes.setdefault(task.model, deque()).append(task)
        self._busy: set[str] = set()

    @property
    def remaining(self) -> int:
        """Sub-epochs not yet handed out."""
        return sum(len(route) for route in self._routes.values())

    def take(self, worker: int) -> SubEpoch | None:
        """The next sub-epoch for free ``worker`` (its model is then busy), or None for now."""
        due = [route[0] for model, route in self._routes.items()
               if route and model not in self._busy and route[0].worker == worker]
        if not due:
            return None
        task = min(due, key=lambda t: (t.start, t.model))
        self._routes[task.model].popleft()
        self._busy.add(task.model)
        return task

    def finish(self, task: SubEpoch) -> None:
        """``task`` has ended: its model is free for its next sub-epoch."""
        self._busy.discard(task.model)
