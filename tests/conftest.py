"""Shared fixtures: one local Ray instance per test session, the real sample video, an
embedded Kafka broker per test module."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cluster.broker import EmbeddedBroker

# Keep Ray small and quiet on a 2-core machine.
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray instance with 2 CPUs, shared by every test that needs Ray."""
    import ray

    for attempt in range(3):  # Ray gives a raylet 30 s to register; a loaded machine can miss that
        if ray.is_initialized():
            break
        try:
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        except Exception:  # noqa: BLE001 - Ray raises a bare Exception on a startup timeout
            ray.shutdown()
            if attempt == 2:
                raise
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def vtest_path() -> Path:
    """The real vtest.avi from Debian's opencv-doc, fetched once and cached."""
    from operators.assets import vtest_video

    return vtest_video()


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """opencv-doc's sample data directory (photos and videos)."""
    from operators.assets import sample_data_dir

    return sample_data_dir()


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """A real embedded Kafka-protocol broker (Tansu) for the tests of one module."""
    with EmbeddedBroker(state_dir=tmp_path_factory.mktemp("broker")) as running:
        yield running
