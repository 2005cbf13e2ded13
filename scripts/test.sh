#!/usr/bin/env bash
# Set up a virtual environment with sdgen and its test tools, then lint and run every test
# (the slow and reference ones too) and the smoke script. This is the README's test
# command; .ci/run calls it as it is. Extra arguments go to every pytest run.
#
# The tests run in two lanes side by side, which keeps both cores busy: a heavy lane runs
# the tests marked full_size one process after another (each takes up to 15 GB, so no
# two ever run together), and beside it a light lane runs every other test in one
# pytest run over $SDGEN_TEST_WORKERS processes [2] (pytest-xdist), whose log is printed
# when it ends. At the end the script prints the wall time of every phase, and each
# pytest run lists its 25 slowest tests, so slow creep shows in every log. To check on an
# AVX-512 machine what an AVX2 machine would compute, run it under scripts/as-avx2 (see
# the README's Reproducibility section).
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
light="" light_log=.test-logs/light-lane.log
finish() {
    if [ -n "$light" ] && kill -0 "$light" 2> /dev/null; then  # a heavy check failed
        pkill -TERM -P "$light" 2> /dev/null || true  # its pytest, whose workers follow
        kill "$light" 2> /dev/null || true
        echo "== light lane (stopped), its log so far:" >&2
        cat "$light_log" >&2 || true
    fi
    report
}
trap finish EXIT

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
# pytest's exit status 5 (nothing selected, e.g. with -k or -m "not slow") is fine here.
# Plain `pytest` runs only the fast suite (tests/conftest.py); here every test runs, in
# the lane SDGEN_TEST_LANE names [all].
pytest_run() {
    SDGEN_TEST_LANE=${SDGEN_TEST_LANE:-all} .venv/bin/python -m pytest --durations=25 "$@" ||
        [ $? -eq 5 ]
}

phase install install
if [ "${CI:-}" = "true" ]; then
    export SDGEN_REQUIRE_CHROMIUM=1  # in CI a missing browser fails instead of skipping
fi
phase lint lint

# the reference tests (against diffusers on PyTorch CPU) must run here, not be skipped
export SDGEN_REQUIRE_REFERENCE=1
sd=tests/reference/test_checkpoints_vs_diffusers.py
openvino=tests/test_openvino_full_size.py
end_to_end=tests/reference/test_import_end_to_end.py
lora=tests/reference/test_lora_vs_diffusers.py
images=tests/reference/test_image_tasks_vs_diffusers.py

# the light lane, in the background
mkdir -p .test-logs
(
    began=$SECONDS status=0
    SDGEN_TEST_LANE=light pytest_run -n "${SDGEN_TEST_WORKERS:-2}" --dist loadgroup "$@" \
        > "$light_log" 2>&1 || status=$?
    echo $((SECONDS - began)) > .test-logs/light-lane.seconds
    exit "$status"
) &
light=$!
echo "== light lane: the tests not marked full_size, in the background (log: $light_log)" >&2

# the heavy lane, here: one process after another, so their memory never adds up
phase "full-size SD 1.5 conversion" pytest_run "$sd" -k "not sd21" "$@"
phase "full-size SD 2.1 conversion" pytest_run "$sd" -k "sd21" "$@"
phase "full-size OpenVINO" pytest_run "$openvino" "$@"
phase "full-size import end to end" pytest_run "$end_to_end" "$@"
# LoRA merging against diffusers' fuse_lora: each format in a process of its own (two
# in one process held 24 GB and were killed)
phase "full-size LoRA (kohya)" pytest_run "$lora" -k "full_size and kohya" "$@"
phase "full-size LoRA (PEFT)" pytest_run "$lora" -k "full_size and peft" "$@"
phase "full-size image tasks" pytest_run "$images" -k full_size "$@"
SDGEN_TEST_LANE=heavy phase "other full-size checks" pytest_run --deselect "$sd" \
    --deselect "$openvino" --deselect "$end_to_end" --deselect "$lora" --deselect "$images" "$@"
status=0
wait "$light" || status=$?
light=""
echo "== light lane log" >&2
cat "$light_log"
line=$(printf '%-28s %5d s' "light lane (alongside)" "$(cat .test-logs/light-lane.seconds)")
[ "$status" -eq 0 ] || line="$line  FAILED"
phases+=("$line")
[ "$status" -eq 0 ] || exit "$status"

phase smoke env PATH="$PWD/.venv/bin:$PATH" bash scripts/smoke.sh
