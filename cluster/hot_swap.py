"""Hot swap: replace an operator of a running pipeline at a batch boundary.

A running pipeline (:func:`cluster.runtime.run_dataflow`) owns a named control actor,
``pipeline-<name>`` in the ``streamvision`` namespace. :func:`deploy` (``streamvision deploy
MODEL --pipeline NAME``) posts a *deployment* to it; the driver, which keeps one call on the
actor waiting, takes it at once and sends the new operator to every replica of the target
node. Each replica runs its calls in the order the driver sent them, so every batch sent
before the swap is processed by the old operator and every later one by the new: nothing is
dropped, nothing runs twice, and each patch's ``model`` column (lineage) names the version
that made it. A *rollback* redeploys the operator that the last deployment replaced.

A deployment of a featurizer (an operator whose output vectors are not comparable with the old
ones) names a new collection: the pipeline's sink writes the new version's patches there while
the old collection keeps its vectors and keeps answering.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from cluster.service.names import NAMESPACE
from streamvision.core.errors import ConfigError, StreamVisionError

#: Seconds :func:`deploy` waits for the driver to apply a deployment.
APPLY_TIMEOUT_S = 120.0
#: Seconds a new run waits for the control actor of an ended run of the same name to go.
NAME_FREE_S = 3.0


class DeployError(StreamVisionError, RuntimeError):
    """No such running pipeline, or it refused or did not apply a deployment."""


def control_name(pipeline: str) -> str:
    """Name of a running pipeline's control actor."""
    return f"pipeline-{pipeline}"


@ray.remote(num_cpus=0)
class PipelineControl:
    """The mailbox between ``streamvision deploy`` and a running pipeline's driver.

    Deployments are numbered from 0; each is ``{"op", "params", "node", "collection",
    "rollback"}`` and, once the driver applied it, carries ``"applied"`` (the node, the old and
    the new version) or ``"error"``.
    """

    def __init__(self) -> None:
        self.log: list[dict[str, Any]] = []
        self._posted = asyncio.Event()

    async def post(self, deployment: dict[str, Any]) -> int:
        """Queue a deployment; its index."""
        self.log.append({**deployment, "posted_at": time.time()})
        self._posted.set()
        self._posted = asyncio.Event()
        return len(self.log) - 1

    async def next(self, seen: int) -> list[tuple[int, dict[str, Any]]]:
        """Deployments with index >= ``seen`` (waits until there is one)."""
        while len(self.log) <= seen:
            await self._posted.wait()
        return [(i, d) for i, d in enumerate(self.log) if i >= seen]

    async def done(self, index: int, outcome: dict[str, Any]) -> None:
        """The driver's outcome of deployment ``index`` (``applied`` or ``error``)."""
        self.log[index].update(outcome)

    async def history(self) -> list[dict[str, Any]]:
        """Every deployment and its outcome, in order."""
        return list(self.log)


def _on_this_node() -> NodeAffinitySchedulingStrategy:
    """Place an actor on the driver's node: it lives and dies with the driver, not with a worker
    node the cluster may lose mid-run."""
    return NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)


def start_control(pipeline: str) -> Any:
    """The control actor of a pipeline about to run (refused if one of that name runs; the
    actor of a run that just ended may take a moment to free its name)."""
    deadline = time.monotonic() + NAME_FREE_S
    while True:
        try:
            return PipelineControl.options(name=control_name(pipeline), namespace=NAMESPACE,
                                           scheduling_strategy=_on_this_node()).remote()
        except ValueError as exc:  # the name is taken
            if time.monotonic() > deadline:
                raise ConfigError(f"a pipeline named {pipeline!r} is already running; give this one "
                                  f"another name") from exc
            time.sleep(0.1)


def find_control(pipeline: str) -> Any:
    """The control actor of the running pipeline ``pipeline``.

    Raises:
        DeployError: no pipeline of that name runs on this Ray cluster.
    """
    try:
        return ray.get_actor(control_name(pipeline), namespace=NAMESPACE)
    except ValueError as exc:
        raise DeployError(f"no running pipeline named {pipeline!r} on this Ray cluster") from exc


def deploy(pipeline: str, op: str = "mop_classifier", params: dict[str, Any] | None = None, *,
           node: str | None = None, collection: str | None = None, rollback: bool = False,
           wait: bool = True, timeout_s: float = APPLY_TIMEOUT_S) -> dict[str, Any]:
    """Swap an operator of the running pipeline ``pipeline`` (Ray must be initialised).

    Args:
        op: the registered operator to deploy (default ``mop_classifier``).
        params: its options (``{"model": NAME}`` for ``mop_classifier``).
        node: the node to replace (default: the pipeline's one node running ``op``).
        collection: for a featurizer, the data directory of the new collection its patches go to.
        rollback: redeploy what the last applied deployment replaced (``op`` and ``params`` unused).
        wait: wait until the driver has applied it.

    Returns:
        The deployment record, with ``applied`` (``node``, ``old``, ``new`` versions).

    Raises:
        DeployError: no such pipeline, it did not apply the deployment in time, or it refused it.
    """
    control = find_control(pipeline)
    deployment = {"op": op, "params": dict(params or {}), "node": node, "collection": collection,
                  "rollback": rollback}
    index = ray.get(control.post.remote(deployment))
    if not wait:
        return {**deployment, "index": index}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        record = ray.get(control.history.remote())[index]
        if "error" in record:
            raise DeployError(f"pipeline {pipeline!r} refused the deployment: {record['error']}")
        if "applied" in record:
            return {**record, "index": index}
        time.sleep(0.05)
    raise DeployError(f"pipeline {pipeline!r} did not apply the deployment within {timeout_s:.0f} s")


def history(pipeline: str) -> list[dict[str, Any]]:
    """Every deployment of a running pipeline and its outcome."""
    return ray.get(find_control(pipeline).history.remote())
