"""Runs a validated :class:`~streamvision.plan.dataflow.Dataflow` on Ray.

The driver keeps only object refs and small counters. Each node is a pool of actors
(see ``cluster/actors.py``); batches pass between pools as refs, so pixels go from
actor to actor through the object store and never through the driver. The loop:

1. pulls from a source only while the edge into its first operator has room
   (bounded edges: a slow sink stops the source, memory stays bounded);
2. hands queued refs to the least-loaded actor of each pool, merging several queued
   batches up to ``max_batch`` frames or until ``max_wait_ms`` passed (dynamic batching);
3. waits for any task to finish; sink acks carry the offsets a write completed, which go
   back to the sources (Kafka commits them for lag monitoring), and the messages an operator
   or the sink failed on, which go back to the sources to be dead-lettered
   (:mod:`operators.quarantine`).

End of stream drains everything in flight and closes the sinks; Ctrl-C or
``stop_after_s`` stops reading and drains the same way. While it runs, the pipeline's control
actor (:mod:`cluster.hot_swap`) may hand the loop a deployment, which it applies between two
batches (:meth:`_Driver.apply`). Actors restart after a crash
(``max_restarts``) and Ray retries their in-flight tasks (``max_task_retries``).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable

import ray
from ray.util import metrics

from cluster import hot_swap
from cluster.actors import OperatorActor, SinkActor, SourceActor, least_advanced
from cluster.local import ensure_ray
from cluster.service import names
from operators.base import OperatorContext
from streamvision.plan.dataflow import SERVED_INGEST_NICE, Dataflow, Node
from streamvision.core.errors import ConfigError, StreamVisionError

_POLL_S = 0.02
log = logging.getLogger(__name__)


@dataclass
class Progress:
    """What the driver knows mid-run; passed to the ``progress`` callback."""

    frames: int
    written: int
    elapsed_s: float
    queue_depth: dict[str, int]

    @property
    def fps(self) -> float:
        """Frames read per second so far."""
        return self.frames / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass
class RunReport:
    """The outcome of a run."""

    name: str
    frames: int
    written: int
    elapsed_s: float
    stopped_early: bool
    sinks: dict[str, dict[str, Any]] = field(default_factory=dict)
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: per operator node, the items each operator version processed (hot swaps change versions)
    versions: dict[str, dict[str, int]] = field(default_factory=dict)
    #: the deployments applied during the run, in order (see :mod:`cluster.hot_swap`)
    deployments: list[dict[str, Any]] = field(default_factory=list)

    @property
    def fps(self) -> float:
        """Frames per second over the whole run (after the actors were up)."""
        return self.frames / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass
class _Entry:
    ref: Any
    frames: int
    enqueued: float


class _Pool:
    """Driver-side view of one node's actors, its input queue and its in-flight tasks."""

    def __init__(self, node: Node, actors: list[Any]) -> None:
        self.node = node
        self.actors = actors
        self.queue: deque[_Entry] = deque()
        self.load = [0] * len(actors)
        self.inflight: dict[Any, tuple[int, int]] = {}  # ref -> (actor index, frames)
        self.upstream_done = False

    @property
    def capacity(self) -> int:
        return self.node.resources.capacity

    def has_room(self) -> bool:
        return len(self.queue) < self.capacity

    def take_group(self, now: float) -> list[_Entry] | None:
        """The next group of queued batches to submit, or ``None`` to wait for more."""
        limit = self.node.resources.max_batch
        if limit is None:
            return [self.queue.popleft()]
        group, frames = [], 0
        for entry in self.queue:
            if group and frames + entry.frames > limit:
                break
            group.append(entry)
            frames += entry.frames
        full = frames >= limit or len(group) < len(self.queue)
        waited_ms = (now - self.queue[0].enqueued) * 1000.0
        if not full and not self.upstream_done and waited_ms < self.node.resources.max_wait_ms:
            return None
        for _ in group:
            self.queue.popleft()
        return group


class _Source:
    def __init__(self, node: Node, actors: list[Any]) -> None:
        self.node = node
        self.actors = actors
        self.pending: dict[Any, tuple[int, Any]] = {}  # status ref -> (actor index, batch ref)
        self.done = [False] * len(actors)
        self.turn = 0
        self.sinks: list[str] = []  # the sinks downstream of it, whose offsets it resumes from


def call_order(outstanding: Counter, replicas: int, turn: int) -> list[int]:
    """The order in which a source's replicas are offered a ``next`` call: fewest calls out
    first, ties from ``turn`` on (which moves by one each round). A replica whose call is out
    (a long poll of its idle partitions) thus never takes the last slot before one that has
    just answered, which would then wait, its partitions unread, for as long as the other polls.

    >>> call_order(Counter({0: 1}), 2, turn=0)
    [1, 0]
    >>> call_order(Counter(), 3, turn=1)
    [1, 2, 0]
    """
    return sorted(range(replicas), key=lambda i: (outstanding[i], (i - turn) % replicas))


def _actor_options(node: Node) -> dict[str, Any]:
    res = node.resources
    return {
        "num_cpus": res.num_cpus,
        "num_gpus": res.num_gpus,
        "resources": dict(res.custom_resources),
        "max_restarts": res.max_restarts,
        # Retry a call for as long as its actor can come back: a restart on another node, after
        # a node is lost, fast-fails calls while its constructor runs, and each fails one retry.
        # Restarts stay bounded: a batch that kills its actor every time ends when they run out.
        "max_task_retries": -1 if res.max_restarts else 0,
        "max_concurrency": 1,
    }


def _nice(flow: Dataflow) -> dict[str, int | None]:
    """Each node's niceness: as its resources say, else ``SERVED_INGEST_NICE`` in a flow that
    writes into a served collection (its queries share these cores), else ``None`` (as Ray
    started the worker)."""
    default = SERVED_INGEST_NICE if served_ray_address(flow) is not None else None
    return {n.id: default if n.resources.nice is None else n.resources.nice for n in flow.nodes}


def _device(node: Node) -> str:
    return "cuda" if node.resources.num_gpus > 0 else "cpu"


def _unwrap(exc: ray.exceptions.RayTaskError) -> BaseException:
    cause = exc.cause
    return cause if isinstance(cause, StreamVisionError) else exc


class _Driver:
    def __init__(self, flow: Dataflow, progress: Callable[[Progress], None] | None) -> None:
        self.flow = flow
        self.progress = progress
        self.sources: list[_Source] = []
        self.pools: dict[str, _Pool] = {}
        self.sinks: dict[str, _Pool] = {}
        self.frames = 0
        self.written = 0
        self.sink_offsets: dict[str, dict[tuple[str, int], int]] = {}  # durable offsets each sink reported
        self.stop = threading.Event()
        self.control: Any = None  # the pipeline's control actor (hot swap)
        self._control_ref: Any = None
        self._seen = 0
        self._replaced: list[tuple[str, Any, str | None]] = []  # (node, operator, collection) per swap
        self._collections: dict[str, str | None] = {}  # node -> collection of its swapped-in featurizer
        self._current: dict[str, Any] = {}  # node -> operator swapped in
        self.deployments: list[dict[str, Any]] = []
        self._queue_gauge = metrics.Gauge(
            "streamvision_queue_depth", description="Batches queued or running on an edge.", tag_keys=("node",))

    # ------------------------------------------------------------------ set-up
    def start(self) -> None:
        """Create every actor at once, so that model loading overlaps the other actors' start-up;
        then open the sources (bad input fails before any write) and the sinks, and wait for the
        models."""
        nice = _nice(self.flow)
        for node in self.flow.nodes:
            if node.kind == "sink":
                actor = SinkActor.options(**_actor_options(node)).remote(node.id, node.component, nice[node.id])
                self.sinks[node.id] = _Pool(node, [actor])
        for node in self.flow.nodes:
            if node.kind == "operator":
                actors = [
                    OperatorActor.options(**_actor_options(node)).remote(
                        node.id, node.component,
                        OperatorContext(_device(node), max(1, int(node.resources.num_cpus)), i), nice[node.id])
                    for i in range(node.resources.replicas)
                ]
                self.pools[node.id] = _Pool(node, actors)
            elif node.kind == "source":
                below = self._sinks_below(node.id)
                actors = [
                    SourceActor.options(**_actor_options(node)).remote(
                        node.id, node.component, node.resources.max_batch, [self.sinks[s].actors[0] for s in below],
                        node.resources.replicas, nice[node.id])
                    for _ in range(node.resources.replicas)
                ]
                self.sources.append(_Source(node, actors))
                self.sources[-1].sinks = below
        try:
            ray.get([a.open.remote() for s in self.sources for a in s.actors])
            ray.get([p.actors[0].open.remote() for p in self.sinks.values()])
            # models load in the actors' constructors: wait for them, so the run's clock starts on data
            ray.get([a.__ray_ready__.remote() for p in self.pools.values() for a in p.actors])
        except ray.exceptions.RayTaskError as exc:
            self.kill_all()
            raise _unwrap(exc) from None
        except ray.exceptions.ActorDiedError as exc:
            self.kill_all()
            cause = getattr(exc, "cause", None) or exc
            raise (cause if isinstance(cause, StreamVisionError) else exc) from None

    def _sinks_below(self, node_id: str) -> list[str]:
        out: list[str] = []
        for child in self.flow.children(node_id):
            out += [child.id] if child.kind == "sink" else self._sinks_below(child.id)
        return sorted(set(out))

    def kill_all(self) -> None:
        for group in [*(s.actors for s in self.sources), *(p.actors for p in self.pools.values()),
                      *(p.actors for p in self.sinks.values())]:
            for actor in group:
                ray.kill(actor, no_restart=True)
        if self.control is not None:
            ray.kill(self.control, no_restart=True)
            self.control = None

    def _children(self, node_id: str) -> list[_Pool]:
        return [self.pools.get(n.id) or self.sinks[n.id] for n in self.flow.children(node_id)]

    # ------------------------------------------------------------------ the loop
    def _pull(self) -> None:
        if self.stop.is_set():
            return
        for src in self.sources:
            children = self._children(src.node.id)
            n = len(src.actors)
            per_actor = max(1, src.node.resources.capacity // n)
            outstanding = Counter(a for a, _ in src.pending.values())
            order = call_order(outstanding, n, src.turn)
            src.turn = (src.turn + 1) % n
            for i in order:
                if src.done[i]:
                    continue
                queued = sum(len(c.queue) for c in children) + len(src.pending)
                if outstanding[i] >= per_actor or queued >= min(c.capacity for c in children):
                    continue
                status, batch = src.actors[i].next.remote()
                src.pending[status] = (i, batch)
                outstanding[i] += 1

    def _dispatch(self, now: float) -> None:
        for pool in [*self.pools.values(), *self.sinks.values()]:
            children = self._children(pool.node.id)
            while pool.queue and len(pool.inflight) < pool.capacity and all(c.has_room() for c in children):
                group = pool.take_group(now)
                if group is None:
                    break
                i = min(range(len(pool.actors)), key=pool.load.__getitem__)
                actor = pool.actors[i]
                refs = [e.ref for e in group]
                out = actor.write.remote(*refs) if pool.node.kind == "sink" else actor.process.remote(*refs)
                frames = sum(e.frames for e in group)
                pool.inflight[out] = (i, frames)
                pool.load[i] += 1
                for child in children:
                    child.queue.append(_Entry(out, frames, now))

    def _waitables(self) -> list[Any]:
        refs = [r for s in self.sources for r in s.pending]
        for pool in [*self.pools.values(), *self.sinks.values()]:
            refs.extend(pool.inflight)
        return refs

    def _complete(self, ready: list[Any]) -> None:
        ready_set = set(ready)
        now = time.perf_counter()
        for src in self.sources:
            for status in [r for r in src.pending if r in ready_set]:
                i, batch = src.pending.pop(status)
                n = ray.get(status)
                if n < 0:
                    src.done[i] = True
                    continue
                self.frames += n
                for child in self._children(src.node.id):
                    child.queue.append(_Entry(batch, n, now))
        for pool in [*self.pools.values(), *self.sinks.values()]:
            for ref in [r for r in pool.inflight if r in ready_set]:
                i, _ = pool.inflight.pop(ref)
                pool.load[i] -= 1
                if pool.node.kind == "sink":
                    ack = ray.get(ref)
                    self.written += ack["written"]
                    if ack["offsets"]:
                        self._commit(pool.node.id, ack["offsets"])
                    if ack["rejected"]:
                        self._reject(pool.node.id, ack["rejected"])
        self._mark_upstream_done()

    def _commit(self, sink_id: str, offsets: dict[tuple[str, int], int]) -> None:
        """Pass durable offsets to the sources above the sink: with several sinks below a source,
        an offset is done once every one of them holds it."""
        self.sink_offsets.setdefault(sink_id, {}).update(offsets)
        for src in self.sources:
            if sink_id in src.sinks:
                done = least_advanced([self.sink_offsets.get(s, {}) for s in src.sinks])
                if done:
                    for actor in src.actors:
                        actor.commit.remote(done)

    def _reject(self, sink_id: str, messages: list[list[Any]]) -> None:
        """Hand messages an operator or the sink set aside to the sources above the sink: each
        dead-letters its own and returns a batch completing their offsets, which flows down
        like any other (the run does not end before it is written)."""
        for src in self.sources:
            if sink_id in src.sinks:
                status, batch = src.actors[0].reject.remote(messages)
                src.pending[status] = (0, batch)

    def _mark_upstream_done(self) -> None:
        for pool in [*self.pools.values(), *self.sinks.values()]:
            up = pool.node.upstream
            if up in self.pools:
                upstream = self.pools[up]
                pool.upstream_done = upstream.upstream_done and not upstream.queue and not upstream.inflight
            else:
                src = next(s for s in self.sources if s.node.id == up)
                pool.upstream_done = (all(src.done) or self.stop.is_set()) and not src.pending

    def _idle(self) -> bool:
        sources_done = all(all(s.done) or self.stop.is_set() for s in self.sources)
        return sources_done and not self._waitables() and not any(
            p.queue for p in [*self.pools.values(), *self.sinks.values()])

    def loop(self, started: float, stop_after_s: float | None) -> None:
        last_progress = 0.0
        while not self._idle():
            now = time.perf_counter()
            if stop_after_s is not None and now - started >= stop_after_s:
                self.stop.set()
            self._pull()
            self._dispatch(now)
            waitables = self._waitables()
            if waitables:
                control = [self._control_ref] if self._control_ref is not None else []
                ready, _ = ray.wait(waitables + control, num_returns=1, timeout=_POLL_S)
                if ready:
                    if self._control_ref is not None and self._control_ref in ready:
                        self._deployments()
                    ready, _ = ray.wait(waitables, num_returns=len(waitables), timeout=0)
                    self._complete(ready)
            else:
                self._mark_upstream_done()
            if now - last_progress > 0.5:
                last_progress = now
                self._report(now - started)
        self._report(time.perf_counter() - started)

    # ------------------------------------------------------------------ hot swap
    def listen(self) -> None:
        """Take deployments for this pipeline (the control actor, named after it)."""
        try:
            self.control = hot_swap.start_control(self.flow.name)
        except ConfigError as exc:
            log.warning("%s: hot swap is off for this run", exc)
            return
        self._control_ref = self.control.next.remote(0)

    def _deployments(self) -> None:
        for index, deployment in ray.get(self._control_ref):
            try:
                outcome: dict[str, Any] = {"applied": self.apply(deployment)}
                self.deployments.append({**deployment, **outcome})
            except (StreamVisionError, ray.exceptions.RayTaskError) as exc:
                outcome = {"error": str(_unwrap(exc) if isinstance(exc, ray.exceptions.RayTaskError) else exc)}
            ray.get(self.control.done.remote(index, outcome))
            self._seen = index + 1
        self._control_ref = self.control.next.remote(self._seen)

    def _operator(self, node_id: str) -> Any:
        """The operator a node runs now (the flow's, or the last one swapped in)."""
        return self._current.get(node_id, self.pools[node_id].node.component)

    def _target(self, deployment: dict[str, Any], operator: Any) -> str:
        if deployment.get("node"):
            if deployment["node"] not in self.pools:
                raise ConfigError(f"pipeline {self.flow.name!r} has no operator node {deployment['node']!r}; "
                                  f"its nodes: {', '.join(self.pools)}")
            return str(deployment["node"])
        same = [n for n in self.pools if type(self._operator(n)) is type(operator)]
        if len(same) != 1:
            raise ConfigError(f"pipeline {self.flow.name!r} has {len(same)} nodes running {operator.name!r}: "
                              f"name the node to replace (nodes: {', '.join(self.pools)})")
        return same[0]

    def apply(self, deployment: dict[str, Any]) -> dict[str, Any]:
        """Swap a node's operator on every replica, between two batches: the calls the driver sent
        before run the old operator, every later one the new. Returns the node and both versions."""
        from operators import registry

        if deployment.get("rollback"):
            if not self._replaced:
                raise ConfigError(f"pipeline {self.flow.name!r} has no deployment to roll back")
            node_id, operator, collection = self._replaced.pop()
        else:
            operator = registry.build(str(deployment["op"]), dict(deployment.get("params") or {}))
            node_id = self._target(deployment, operator)
            collection = deployment.get("collection")
            featurizer = type(self._operator(node_id)).__module__.startswith("operators.featurizers")
            if featurizer and not collection:
                raise ConfigError(f"{node_id} is a featurizer: the vectors of two models are not comparable, so "
                                  f"name a new collection for the new one's patches (collection=DIR)")
        pool = self.pools[node_id]
        if collection:  # the sinks below write the new featurizer's patches there
            spec = {"op": deployment.get("op"), "options": dict(deployment.get("params") or {})}
            ray.get([self.sinks[s].actors[0].route.remote(str(collection), spec) for s in self._sinks_below(node_id)])
        versions = ray.get([actor.swap.remote(operator, str(collection) if collection else None)
                            for actor in pool.actors])
        if not deployment.get("rollback"):
            self._replaced.append((node_id, self._operator(node_id), self._collections.get(node_id)))
        self._current[node_id] = operator
        self._collections[node_id] = collection
        return {"node": node_id, "old": versions[0]["old"], "new": versions[0]["new"], "collection": collection,
                "frames_read_before": self.frames, "at": time.time()}

    def _report(self, elapsed: float) -> None:
        depth = {}
        for pool in [*self.pools.values(), *self.sinks.values()]:
            depth[pool.node.id] = len(pool.queue) + len(pool.inflight)
            self._queue_gauge.set(depth[pool.node.id], tags={"node": pool.node.id})
        if self.progress is not None:
            self.progress(Progress(self.frames, self.written, elapsed, depth))

    def finish(self) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        sinks = {node_id: ray.get(pool.actors[0].close.remote()) for node_id, pool in self.sinks.items()}
        sources = {}
        for src in self.sources:
            stats = ray.get([a.stats.remote() for a in src.actors])
            sources[src.node.id] = {k: sum(s.get(k, 0) for s in stats) for s in stats for k in s}
            ray.get([a.close.remote() for a in src.actors])
        for pool in self.pools.values():
            ray.get([a.teardown.remote() for a in pool.actors])
        self.kill_all()
        return sinks, sources

    def versions(self) -> dict[str, dict[str, int]]:
        """Per operator node, the items each version processed (summed over replicas)."""
        out: dict[str, dict[str, int]] = {}
        for node_id, pool in self.pools.items():
            for counts in ray.get([a.versions.remote() for a in pool.actors]):
                for version, items in counts.items():
                    out.setdefault(node_id, {})[version] = out.get(node_id, {}).get(version, 0) + items
        return out


def _asks(node: Node, resource: str) -> float:
    """How much of ``resource`` (``"CPU"``, ``"GPU"`` or a custom one) one actor of ``node`` asks for."""
    res = node.resources
    return {"CPU": res.num_cpus, "GPU": res.num_gpus}.get(resource, res.custom_resources.get(resource, 0.0))


def _check_fits(flow: Dataflow) -> None:
    """Refuse a graph whose actors cannot all be placed (Ray would wait for ever). The cluster's
    total counts, not what is free this instant: actors of a run that just ended free their
    CPUs a moment later (``ray.kill`` is asynchronous)."""
    have = ray.cluster_resources()
    for resource, need in flow.required_resources().items():
        if need > have.get(resource, 0.0) + 1e-9:
            per_node = ", ".join(f"{n.id}: {n.resources.replicas} x {_asks(n, resource):g}" for n in flow.nodes)
            raise ConfigError(
                f"dataflow {flow.name!r} needs {need:g} {resource}s but the Ray cluster has "
                f"{have.get(resource, 0.0):g} ({per_node}); lower replicas, num_cpus/num_gpus or custom_resources"
            )


def served_ray_address(flow: Dataflow) -> str | None:
    """The Ray address of the service serving one of ``flow``'s sinks, if any runs."""
    for node in flow.nodes:
        data = getattr(node.component, "data", None) if node.kind == "sink" else None
        served = names.served_ray_address(data) if data else None
        if served is not None:
            return served
    return None


def run_dataflow(
    flow: Dataflow,
    *,
    address: str | None = None,
    progress: Callable[[Progress], None] | None = None,
    stop_after_s: float | None = None,
) -> RunReport:
    """Run ``flow`` (already validated) on Ray until its sources end or it is stopped.

    A flow whose store sink names a served data directory runs on the service's Ray (unless
    ``address`` or ``RAY_ADDRESS`` says otherwise) and writes through the service's writer.
    """
    ensure_ray(address or served_ray_address(flow))
    _check_fits(flow)
    driver = _Driver(flow, progress)
    driver.start()
    driver.listen()
    interrupted = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        def on_sigint(signum: int, frame: Any) -> None:
            if driver.stop.is_set():  # a second Ctrl-C aborts the drain
                raise KeyboardInterrupt
            interrupted.set()
            driver.stop.set()

        previous = signal.signal(signal.SIGINT, on_sigint)
    started = time.perf_counter()
    try:
        driver.loop(started, stop_after_s)
        elapsed = time.perf_counter() - started
        versions = driver.versions()
        sinks, sources = driver.finish()
    except ray.exceptions.RayTaskError as exc:
        driver.kill_all()
        raise _unwrap(exc) from None
    except BaseException:
        driver.kill_all()
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    return RunReport(flow.name, driver.frames, driver.written, elapsed,
                     interrupted.is_set() or driver.stop.is_set(), sinks, sources, versions, driver.deployments)
