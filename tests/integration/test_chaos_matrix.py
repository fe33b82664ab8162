"""The chaos matrix on the real parts: 2 replicas of the source and of each operator, a served
collection; SIGKILL of the source, an operator, the sink, the writer, a shard actor and the
driver, at two moments each; every run ends with the store and the index equal to an
uninterrupted run's (``benchmarks/chaos.py`` is the same matrix, with its figures)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from operators.producers import FrameProducer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import chaos  # noqa: E402

pytestmark = pytest.mark.integration

FLOW_CPUS = 7 * 0.25  # chaos.flow: 2 sources, 2 x 2 operators and the sink at 0.25 CPU each


def _wait_for_free_cpus(ray, need: float, within_s: float = 90.0) -> None:
    """Wait until earlier tests' actors have let go of their CPUs, or fail naming the holders:
    a flow whose actors cannot be placed would otherwise wait for them without end."""
    deadline = time.monotonic() + within_s
    while ray.available_resources().get("CPU", 0.0) < need:
        if time.monotonic() > deadline:
            named = ray.util.list_named_actors(all_namespaces=True)
            pytest.fail(f"{ray.available_resources().get('CPU', 0.0)} CPUs free, {need} needed; named actors "
                        f"alive: {named}")
        time.sleep(1.0)


@pytest.mark.timeout(1200)  # 12 runs of ~25 s alone (277 s in all); a loaded CI machine is slower
def test_every_fault_at_every_moment_ends_with_the_uninterrupted_store(ray_cluster, broker, vtest_path, tmp_path):
    from operators.producers.frame_reader import FrameReader

    _wait_for_free_cpus(ray_cluster, FLOW_CPUS)

    images = [image for _, (image, _) in zip(range(chaos.TOTAL), FrameReader(str(vtest_path)))]
    with FrameProducer(broker.bootstrap_servers, chaos.TOPIC, partitions=2) as producer:
        for c, camera in enumerate(chaos.CAMERAS):
            chunk = images[c * chaos.PER_CAMERA:(c + 1) * chaos.PER_CAMERA]
            producer.send_frames([(im, i / 10) for i, im in enumerate(chunk)], camera=camera, kind="jpeg",
                                 quality=85)
    result = chaos.chaos(broker.bootstrap_servers, tmp_path, [0.25, 0.6])
    assert result["faults_injected"] == len(chaos.FAULTS) * 2, result["runs"]
    assert result["faults_survived"] == result["faults_injected"], result["runs"]
    assert result["lost"] == 0 and result["duplicated"] == 0
