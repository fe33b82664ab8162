"""The prepared GPU device check (``benchmarks/gpu_check.py``) in its CPU smoke mode, its import
route for the device machine (no Ray, FAISS or PyAV there), and its shell wrapper's usage.

The smoke mode runs every section on CPU, so these tests pass with a GPU present too.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def positive(value: Any) -> bool:
    """A finite number above zero."""
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """The smoke run's JSON and its output folder."""
    out = tmp_path_factory.mktemp("gpu_check")
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--cpu-smoke"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads((out / "gpu_check.json").read_text()), out


def test_facts(smoke: tuple[dict[str, Any], Path]) -> None:
    result, out = smoke
    assert result["mode"] == "cpu-smoke"
    assert result["torch"] and result["python"]
    assert positive(result["wall_s"])
    assert set(result["imports"]) == {"streamvision", "stand_ins"}
    assert result["png"] is (out / "gpu_check.png").exists()


def test_models(smoke: tuple[dict[str, Any], Path]) -> None:
    models = smoke[0]["models"]
    for name, key in (("nanodet_m", "frames_per_s"), ("efficientnet_lite0", "patches_per_s")):
        assert models[name]["compute"] == {"device": "cpu", "dtype": "float32", "runtime": "torch"}
        assert set(models[name][key]) == {"1", "4"}
        assert all(positive(v) for v in models[name][key].values()), models[name]
    assert models["frames"] == 4 and models["patches"] == 8 and models["patch_size"] == [224, 224]


def test_flat_scan(smoke: tuple[dict[str, Any], Path]) -> None:
    scan = smoke[0]["flat_scan"]
    assert scan["engine"] == "torch" and scan["rows"] == 20_000 and scan["dim"] == 1024
    assert math.isclose(scan["bandwidth_vectors_per_s"], 4800e9 / 4096)
    assert set(scan["by_query_batch"]) == {"1", "16", "256"}
    for figures in scan["by_query_batch"].values():
        assert all(positive(figures[k]) for k in ("vectors_per_s", "gb_per_s", "fraction_of_bandwidth", "queries_per_s"))
        assert figures["self_match"] == 1.0  # every query is a database row: its own top-1


def test_decode(smoke: tuple[dict[str, Any], Path]) -> None:
    decode = smoke[0]["decode"]
    assert decode["cpu"]["decoder"] in ("pyav", "opencv")
    assert decode["cpu"]["frames"] == 100 and positive(decode["cpu"]["frames_per_s"])
    assert decode["video"]["width"] == 768 and decode["video"]["height"] == 576
    assert "skipped" in decode["nvdec"] or decode["nvdec"]["cuvid_decoders"]


def test_pipeline(smoke: tuple[dict[str, Any], Path]) -> None:
    pipeline = smoke[0]["pipeline"]
    assert pipeline["runner"].startswith("in-process operator chain")
    assert [name.split("@")[0] for name in pipeline["chain"]] == ["nanodet-m", "tracker", "efficientnet-lite0"]
    assert set(pipeline["by_streams"]) == {"1", "2"}
    for streams, run in pipeline["by_streams"].items():
        assert run["streams"] == int(streams)
        assert run["frames"] == int(streams) * pipeline["frames_per_stream"]
        assert positive(run["frames_per_s"]) and positive(run["frames_per_s_per_stream"])
        assert run["patches"] >= run["frames"]  # every whole frame and its detections


def test_device_import_route() -> None:
    """Without Ray, FAISS and PyAV the operator chain and the default flow's steps still load,
    PyAV and FAISS stood in, frames decoded with OpenCV."""
    code = textwrap.dedent(f"""
        import json, sys
        sys.modules.update(dict.fromkeys(["ray", "faiss", "av"]))  # None: "not installed" to the import system
        sys.path.insert(0, {str(SCRIPT.parent)!r})
        import gpu_check
        imports = gpu_check.import_project()
        from operators.assets import vtest_video
        steps, batch = gpu_check.default_steps(vtest_video(), gpu=False)
        frames = list(gpu_check.decoded_frames(vtest_video(), 3))
        print(json.dumps({{"imports": imports, "chain": [s.operator.name for s in steps], "batch": batch,
                          "decoder": gpu_check.decoder_name(), "shapes": [list(f.shape) for f in frames]}}))
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["imports"]["stand_ins"] == ["av", "faiss"]
    assert found["imports"]["streamvision"] == "imported; layers loaded: streamvision"  # no Ray layer loaded
    assert [name.split("@")[0] for name in found["chain"]] == ["nanodet-m", "tracker", "efficientnet-lite0"]
    assert found["batch"] == 16 and found["decoder"] == "opencv"
    assert found["shapes"] == [[576, 768, 3]] * 3


@pytest.mark.parametrize("args", [[], ["bogus"], ["run"]])
def test_shell_usage(args: list[str]) -> None:
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert done.stderr.startswith("usage: bash benchmarks/gpu_check.sh prepare")
