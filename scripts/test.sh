#!/usr/bin/env bash
# Set up a virtual environment with sdgen and its test tools, then lint and run every test
# (the slow and reference ones too) and the smoke script. This is the README's test
# command; .ci/run calls it as it is. Extra arguments go to every pytest run.
#
# The main run spreads the tests over $SDGEN_TEST_WORKERS processes [2] (pytest-xdist);
# the full-size checks each get a process of their own. At the end it prints the wall
# time of every phase, and each pytest run lists its 25 slowest tests, so slow creep
# shows in every log. To check on an AVX-512 machine what an AVX2 machine would compute,
# run it under scripts/as-avx2 (see the README's Reproducibility section).
set -euo pipefail
cd "$(dirname "$0")/.."

phases=() current="" began=0
phase() {  # phase NAME COMMAND...: run COMMAND, record its wall time under NAME
    current=$1 began=$SECONDS
    shift
    echo "== $current" >&2
    "$@"  # not in a condition, so that set -e still stops at a failing command inside
    phases+=("$(printf '%-28s %5d s' "$current" $((SECONDS - began)))")
    current=""
}
report() {
    [ -z "$current" ] || phases+=("$(printf '%-28s %5d s  FAILED' "$current" $((SECONDS - began)))")
    echo "== wall time by phase (CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)," \
        "ONEDNN_MAX_CPU_ISA=${ONEDNN_MAX_CPU_ISA:-unset})" >&2
    printf '%s\n' "${phases[@]}" >&2
    printf '%-28s %5d s\n' "total" "$SECONDS" >&2
}
trap report EXIT

install() {
    python3 -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".[test,reference]"
    # the contact-sheet tests look at pages in Debian's headless Chromium
    if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
        apt-get update -qq && apt-get install -y -qq chromium > /dev/null
    fi
}
lint() {
    .venv/bin/ruff check .
    .venv/bin/ruff format --check .
}
# pytest's exit status 5 (nothing selected, e.g. with -k or -m "not slow") is fine here
pytest_run() {
    .venv/bin/python -m pytest --durations=25 "$@" || [ $? -eq 5 ]
}

phase install install
if [ "${CI:-}" = "true" ]; then
    export SDGEN_REQUIRE_CHROMIUM=1  # in CI a missing browser fails instead of skipping
fi
phase lint lint

# the reference tests (against diffusers on PyTorch CPU) must run here, not be skipped;
# the full-size conversion checks (about 11 GB each) and the full-size OpenVINO check get
# a process of their own, so the memory one leaves behind never adds to the rest
export SDGEN_REQUIRE_REFERENCE=1
heavy=tests/reference/test_checkpoints_vs_diffusers.py
openvino=tests/test_openvino_full_size.py
phase "main run (xdist)" pytest_run -n "${SDGEN_TEST_WORKERS:-2}" --dist loadgroup \
    --deselect "$heavy" --deselect "$openvino" "$@"
phase "full-size SD 1.5 conversion" pytest_run "$heavy" -k "not sd21" "$@"
phase "full-size SD 2.1 conversion" pytest_run "$heavy" -k "sd21" "$@"
phase "full-size OpenVINO" pytest_run "$openvino" "$@"
phase smoke env PATH="$PWD/.venv/bin:$PATH" bash scripts/smoke.sh
