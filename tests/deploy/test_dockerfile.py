"""The Dockerfile of the image the Helm chart runs (it is not built here: no docker): its base is
Ray on Python 3.11 at the chart's rayVersion, what it copies exists, it installs as
scripts/setup.sh does, runs as a non-root user, fetches every model at build time, and its command
is one of the project's console scripts."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import yaml

from operators.models.store import MODELS

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` in order, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines
            if line and not line.startswith("#")]


def test_the_base_is_ray_on_python_311_at_the_charts_ray_version():
    bases = [args for op, args in instructions() if op == "FROM"]
    assert len(bases) == 1
    ray_version = yaml.safe_load((ROOT / "helm/streamvision/values.yaml").read_text())["rayVersion"]
    assert bases[0] == f"rayproject/ray:{ray_version}-py311-cpu"


def test_every_copied_source_exists_and_the_packages_are_all_copied():
    copied = []
    for op, args in instructions():
        if op == "COPY":
            words = [w for w in shlex.split(args) if not w.startswith("--")]
            copied += words[:-1]
    assert copied
    for source in copied:
        assert (ROOT / source).exists(), source
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {p.rstrip("*") + "/" for p in packages} <= set(copied)  # streamvision/, operators/, cluster/


def test_it_installs_as_setup_sh_does_and_fetches_every_model():
    runs = " ".join(args for op, args in instructions() if op == "RUN")
    setup = (ROOT / "scripts/setup.sh").read_text()
    for pin in ("torch==", "trackers=="):
        assert re.search(re.escape(pin) + r"[\d.]+", runs).group() == re.search(re.escape(pin) + r"[\d.]+", setup).group()
    assert 'pip install --no-cache-dir ".[openvino]"' in runs
    pulled = re.search(r"for model in ([^;]+);", runs).group(1).split()
    assert sorted(pulled) == sorted(MODELS)


def test_it_runs_as_a_non_root_user_with_a_real_console_script():
    users = [args for op, args in instructions() if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    command = [json.loads(args) for op, args in instructions() if op in ("CMD", "ENTRYPOINT")][-1]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert command[0] in scripts
