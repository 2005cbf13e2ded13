#!/usr/bin/env bash
# Set up a virtual environment with sdgen and its test tools, then lint and run every test
# (the slow and reference ones too) and the smoke script. This is the README's test
# command; .ci/run calls it as it is. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test,reference]"

# the contact-sheet tests look at pages in Debian's headless Chromium
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
    apt-get update -qq && apt-get install -y -qq chromium > /dev/null
fi
if [ "${CI:-}" = "true" ]; then
    export SDGEN_REQUIRE_CHROMIUM=1  # in CI a missing browser fails instead of skipping
fi

.venv/bin/ruff check .
.venv/bin/ruff format --check .
# the reference tests (against diffusers on PyTorch CPU) must run here, not be skipped;
# the full-size conversion checks (about 11 GB each) and the full-size OpenVINO check get
# a process of their own, so the memory one leaves behind never adds to the rest
export SDGEN_REQUIRE_REFERENCE=1
heavy=tests/reference/test_checkpoints_vs_diffusers.py
openvino=tests/test_openvino_full_size.py
.venv/bin/python -m pytest --deselect "$heavy" --deselect "$openvino" "$@"
# exit status 5 (nothing selected, e.g. with -m "not slow") is fine for these
.venv/bin/python -m pytest "$heavy" -k "not sd21" "$@" || [ $? -eq 5 ]
.venv/bin/python -m pytest "$heavy" -k "sd21" "$@" || [ $? -eq 5 ]
.venv/bin/python -m pytest "$openvino" "$@" || [ $? -eq 5 ]
PATH="$PWD/.venv/bin:$PATH" bash scripts/smoke.sh
