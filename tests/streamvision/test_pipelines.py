"""The ready-made ingest graphs reserve what the machine or cluster has, not a fixed 2 CPUs."""

from __future__ import annotations

import pytest

from operators.sources.video_file import VideoFileSource
from streamvision.core.errors import ConfigError
from streamvision.plan.pipelines import ingest_flow, size_ingest
from streamvision.plan.rules import optimize


def _flow(featurizer: str = "models", **budget: float):
    return optimize(ingest_flow(VideoFileSource(path="v.avi"), "/tmp/d", featurizer=featurizer, **budget))


@pytest.mark.parametrize("featurizer", ["models", "histogram"])
@pytest.mark.parametrize("cpus, gpus", [(2, 0), (3, 0), (4, 0), (16, 0), (16, 1), (64, 8)])
def test_the_graph_reserves_the_whole_budget_and_no_more(featurizer, cpus, gpus):
    need = _flow(featurizer, cpus=cpus, gpus=gpus).required_resources()
    assert need["CPU"] == pytest.approx(cpus)
    assert need["GPU"] == pytest.approx(gpus if featurizer == "models" else 0.0)


def test_replicas_grow_with_the_cpus():
    assert [size_ingest(cpus=c).replicas for c in (2, 4, 8, 16, 64)] == [1, 2, 4, 10, 42]
    assert [size_ingest("histogram", cpus=c).replicas for c in (2, 4, 16)] == [1, 3, 15]
    assert size_ingest(cpus=16, replicas=3).replicas == 3


def test_two_cpus_keep_the_reference_shape():
    nodes = {n.id: n.resources for n in _flow(cpus=2).nodes}
    assert [(r.replicas, r.num_cpus, r.num_gpus) for r in nodes.values()] == [
        (1, 0.25, 0.0), (1, 0.75, 0.0), (1, 0.75, 0.0), (1, 0.25, 0.0)]  # detector+tracker fused


def test_gpu_shares_go_to_the_model_steps_only():
    source, detector, tracker, featurizer, sink = (n.resources for n in _flow(cpus=16, gpus=1).nodes)
    assert detector.num_gpus == featurizer.num_gpus == pytest.approx(1 / 20)  # 10 replicas x 2 model steps
    assert detector.replicas == featurizer.replicas == 10
    assert source.num_gpus == tracker.num_gpus == sink.num_gpus == 0.0  # one tracker beside ten replicas
    assert tracker.num_cpus == pytest.approx(0.25) and tracker.replicas == 1


@pytest.mark.parametrize("budget", [{"cpus": 0.5}, {"cpus": 2, "gpus": -1}, {"cpus": 2, "replicas": 0}])
def test_an_impossible_budget_is_refused(budget):
    with pytest.raises(ConfigError):
        size_ingest(**budget)
