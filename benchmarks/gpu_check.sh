#!/usr/bin/env bash
# The prepared GPU device check (benchmarks/gpu_check.py), in three verbs:
#
#   bash benchmarks/gpu_check.sh prepare          here (PyPI and the project's cache at hand): copy what
#                                                 the device machine lacks into .gpu_carry/ (git-ignored
#                                                 through .git/info/exclude): the model files and
#                                                 vtest.avi from the cache, checksums verified, and
#                                                 Python 3.12 wheels of the small packages the operator
#                                                 chain imports, pinned to the versions installed here
#   bash benchmarks/gpu_check.sh run OUT [ARGS]   on the device machine (its python3 has torch+CUDA):
#                                                 install the wheels into /tmp/site and run
#                                                 gpu_check.py --out OUT ARGS within 480 s
#   bash benchmarks/gpu_check.sh smoke OUT [ARGS] gpu_check.py --cpu-smoke on a machine without a GPU
#
# The device call carries .gpu_carry: run(command="bash benchmarks/gpu_check.sh run $OUT", carry=[".gpu_carry"]).
set -euo pipefail
cd "$(dirname "$0")/.."

CARRY=.gpu_carry
# Imported by the operator chain or the plan layer and absent from the device image. Not PyAV, Ray,
# FAISS or torch (too large to carry; gpu_check.py stands in for PyAV and FAISS, which it never calls).
PACKAGES=(pydantic pydantic_core annotated_types typing_inspection typing_extensions rocksdict
          trackers supervision defusedxml pyDeprecate)
LIMIT_MIB=64

usage() {
  echo "usage: bash benchmarks/gpu_check.sh prepare | run OUT [gpu_check.py options] | smoke OUT [gpu_check.py options]" >&2
  exit 2
}

# Copy the files the model loaders and the featurizer's class names read, each verified against its pinned SHA-256.
copy_assets() {
  python3 - "$CARRY/cache" <<'EOF'
import shutil
import sys
from pathlib import Path

from operators.assets import cache_dir, sample_data_dir, vtest_video
from operators.models.store import spec, verify

target = Path(sys.argv[1])
files = [verify(name) / file for name in ("nanodet-m", "efficientnet-lite0") for file in spec(name).files]
files += [vtest_video(), sample_data_dir() / "dnn" / "classification_classes_ILSVRC2012.txt"]
for path in files:
    copy = target / path.relative_to(cache_dir())
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(path, copy)
    print(f"  {copy} ({path.stat().st_size / 2**20:.1f} MiB)")
EOF
}

# Download each package's wheel for CPython 3.12 on x86-64 Linux, at the version installed here.
download_wheels() {
  rm -rf "$CARRY/wheels" && mkdir -p "$CARRY/wheels"
  : > "$CARRY/requirements.txt"
  for name in "${PACKAGES[@]}"; do
    version=$(python3 -m pip show "$name" 2>/dev/null | awk '/^Version:/ {print $2}')
    [ -n "$version" ] || { echo "prepare: $name is not installed here (run scripts/setup.sh)" >&2; exit 1; }
    echo "$name==$version" >> "$CARRY/requirements.txt"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d "$CARRY/wheels" "$name==$version"
  done
  ls -l "$CARRY/wheels" | awk 'NR > 1 {printf "  %s (%.1f MiB)\n", $9, $5 / 2^20}'
}

# What a device call sends: the tracked and untracked-not-ignored files plus .gpu_carry; fail over the limit.
report_size() {
  python3 - "$CARRY" "$LIMIT_MIB" <<'EOF'
import os
import subprocess
import sys

carry, limit = sys.argv[1], float(sys.argv[2])
listed = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], capture_output=True, check=True).stdout
tree = sum(os.path.getsize(f) for f in listed.decode().split("\0") if f and os.path.isfile(f))
carried = sum(os.path.getsize(os.path.join(d, f)) for d, _, names in os.walk(carry) for f in names)
total = (tree + carried) / 2**20
print(f"working tree {tree / 2**20:.1f} MiB + {carry} {carried / 2**20:.1f} MiB = {total:.1f} MiB (limit {limit:.0f} MiB)")
sys.exit(0 if total < limit else 1)
EOF
}

prepare() {
  exclude=$(git rev-parse --git-path info/exclude)
  mkdir -p "$(dirname "$exclude")"
  grep -qxF "/$CARRY/" "$exclude" 2>/dev/null || echo "/$CARRY/" >> "$exclude"
  rm -rf "$CARRY/cache"
  echo "model files and sample video -> $CARRY/cache"
  copy_assets
  echo "wheels -> $CARRY/wheels"
  download_wheels
  report_size
}

run_on_device() {
  out=$1; shift
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  if compgen -G "$CARRY/wheels/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$CARRY"/wheels/*.whl
  else
    echo "no $CARRY/wheels: installing ${PACKAGES[*]} from PyPI" >&2
    python3 -m pip install -q --no-deps --no-compile --upgrade --target /tmp/site "${PACKAGES[@]}"
  fi
  export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
  [ -d "$CARRY/cache" ] && export STREAMVISION_CACHE="$PWD/$CARRY/cache"
  timeout 480 python3 benchmarks/gpu_check.py --out "$out" "$@"
}

case "${1:-}" in
  prepare) prepare ;;
  run) [ $# -ge 2 ] || usage; shift; run_on_device "$@" ;;
  smoke) [ $# -ge 2 ] || usage; out=$2; shift 2; python3 benchmarks/gpu_check.py --out "$out" --cpu-smoke "$@" ;;
  *) usage ;;
esac
