#!/usr/bin/env bash
# Set up a virtual environment with sdgen and its test tools, then lint and run every test
# (the slow ones too). This is the README's test command; .ci/run calls it as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test,reference]"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# the reference tests (against diffusers on PyTorch CPU) must run here, not be skipped
SDGEN_REQUIRE_REFERENCE=1 .venv/bin/python -m pytest "$@"
PATH="$PWD/.venv/bin:$PATH" bash scripts/smoke.sh
