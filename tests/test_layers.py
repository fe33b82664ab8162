"""The layers of ARCHITECTURE section 2 hold: import-linter's contract in pyproject.toml."""

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_no_import_points_up_the_layers():
    linter = shutil.which("lint-imports")
    assert linter, "import-linter is a test dependency: pip install -e '.[test]'"
    done = subprocess.run([linter], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 kept, 0 broken" in done.stdout


def test_each_top_level_package_imports_in_a_fresh_process():
    """Any module may be the first one a process imports (a Ray worker unpickling an actor)."""
    for module in ("operators.base", "cluster.runtime", "streamvision.core.frames", "streamvision.cli",
                   "operators.index.shard", "streamvision.plan.dataflow"):
        done = subprocess.run(["python3", "-c", f"import {module}"], cwd=ROOT, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, f"import {module}: {done.stderr[-2000:]}"
