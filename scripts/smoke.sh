#!/usr/bin/env bash
# A smoke test the way another project's CI would call sdgen: the tiny model, real files,
# exit statuses checked. Needs `sdgen` on PATH.
set -euo pipefail
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

sdgen --config smoke "a lighthouse on a cliff" --seed 42 --num-images 2 --grid \
    --outdir "$out" --json > "$out/summary.json"
python3 - "$out" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
summary = json.loads((out / "summary.json").read_text())
assert [image["seed"] for image in summary["images"]] == [42, 43], summary
for image in summary["images"]:
    assert pathlib.Path(image["path"]).read_bytes()[:4] == b"\x89PNG"
assert pathlib.Path(summary["grid"]).is_file()
assert len((out / "manifest.jsonl").read_text().splitlines()) == 2
PY

# bad input must fail with status 2 and one line, and leave nothing behind
set +e
sdgen --config smoke "" --outdir "$out/bad" 2> "$out/err.txt"
status=$?
set -e
[ "$status" -eq 2 ] || { echo "smoke: expected exit 2 for an empty prompt, got $status"; exit 1; }
[ "$(wc -l < "$out/err.txt")" -eq 1 ] || { echo "smoke: expected a one-line error"; exit 1; }
[ ! -e "$out/bad" ] || [ -z "$(ls -A "$out/bad")" ] || { echo "smoke: files left behind"; exit 1; }
echo "smoke: ok"
