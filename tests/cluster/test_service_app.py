"""The Serve application builder a KubeRay RayService names (``cluster.service.app:build_app``):
it builds the same front end ``streamvision serve`` binds, from ``serveConfigV2``'s ``args`` dict,
with the token from the environment. The writers' start is replaced here, so no Ray starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import ray
from ray.serve import Application

from cluster.service import app
from cluster.service.frontend import QueryFrontend
from streamvision.core.errors import ConfigError


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[tuple[dict[str, Path], dict[str, Any], str]]:
    """The calls to ``_start_writers`` (which would launch the writer actors)."""
    calls: list[tuple[dict[str, Path], dict[str, Any], str]] = []
    monkeypatch.setattr(app, "_start_writers", lambda *a, **kw: calls.append((*a, kw["url"])))
    monkeypatch.setenv(app.TOKEN_ENV, "api-token")
    monkeypatch.setattr(ray, "init", lambda *a, **kw: pytest.fail("build_app started Ray"))
    return calls


def test_builds_the_query_front_end_from_a_dict_of_args(started, tmp_path):
    args = {"data": [str(tmp_path / "cams"), str(tmp_path / "doors")], "kafka": "kafka:9092",
            "index_factory": "SQ8,RFlat", "shards": 4, "port": 8001}
    built = app.build_app(args)
    assert isinstance(built, Application)
    deployment = built._bound_deployment
    assert deployment.name == QueryFrontend.name
    collections = {"cams": str((tmp_path / "cams").resolve()), "doors": str((tmp_path / "doors").resolve())}
    assert deployment.init_args == (collections, "api-token", "kafka:9092")
    assert started == [({n: Path(p) for n, p in collections.items()}, {"index_factory": "SQ8,RFlat", "shards": 4},
                        "http://127.0.0.1:8001")]


def test_defaults_match_streamvision_serve(started, tmp_path):
    app.build_app({"data": [str(tmp_path / "cams")]})
    assert started[0][1:] == ({"index_factory": "Flat", "shards": 2}, "http://127.0.0.1:8000")


@pytest.mark.parametrize("args, message", [
    ({}, "non-empty list of data directories"),
    ({"data": "/data/cams"}, "non-empty list"),
    ({"data": ["/data/cams"], "shard": 2}, r"unknown service argument\(s\) \['shard'\]"),
    ({"data": ["/data/cams"], "shards": 0}, "shards must be an integer >= 1"),
    ({"data": ["/a/cams", "/b/cams"]}, "two served directories are named 'cams'"),
])
def test_bad_args_are_refused_before_anything_starts(started, args, message):
    with pytest.raises(ConfigError, match=message):
        app.build_app(args)
    assert started == []


def test_no_token_no_service(started, monkeypatch, tmp_path):
    monkeypatch.delenv(app.TOKEN_ENV)
    with pytest.raises(ConfigError, match="STREAMVISION_TOKEN"):
        app.build_app({"data": [str(tmp_path / "cams")]})
    assert started == []
