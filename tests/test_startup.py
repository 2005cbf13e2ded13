"""What ``sdgen generate`` can answer without TensorFlow: usage errors and reruns that
only skip. TensorFlow takes seconds to import, so reading, checking and planning a
request must not import it; only loading the first model does.

Each case runs the real entry point in a fresh interpreter (this test process has
TensorFlow imported already) and asks that interpreter whether TensorFlow or Keras got
imported. How long that takes is measured by ``/usr/bin/time`` runs, not here.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import FAST, png_files

from sdgen.output.manifest import read_manifest

#: Runs ``main(ARGS)`` and prints its exit status and what it imported, as JSON.
PROBE = """
import json, sys
from sdgen.cli import main
try:
    main(sys.argv[1:])
    code = 0
except SystemExit as exit_:
    code = exit_.code
print(json.dumps({"code": code, "imported": sorted(
    name for name in ("tensorflow", "keras", "keras_cv") if name in sys.modules)}))
"""


def probe(*args: str) -> tuple[int, list[str], str]:
    """Exit status, the TensorFlow/Keras modules imported, and stderr of ``sdgen ARGS``
    run in a new interpreter, in this test's hermetic folders (the environment and the
    working folder the ``hermetic`` fixture set)."""
    process = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.stdout.strip(), process.stderr
    report = json.loads(process.stdout.strip().splitlines()[-1])
    return report["code"], report["imported"], process.stderr


def error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("Error")]
    assert len(lines) == 1, stderr
    return lines[0]


def _foreign_file(work):
    (work / "taken.png").write_bytes(b"someone else's file")
    return ["--out", "taken.png"]


@pytest.mark.parametrize(
    ("case", "fragment"),
    [
        (lambda work: ["--name-template", "{nope}.png"], "unknown field(s) nope"),
        (_foreign_file, "taken.png already exists"),
        (lambda work: ["--clip-skip", "99"], "clip skip must be from 1 to 2"),
        (lambda work: ["--weights", str(work / "no-such-folder")], "does not exist"),
        (lambda work: ["--steps", "0"], "steps must be at least 1"),
    ],
    ids=["name-template", "existing-file", "clip-skip", "weights-folder", "steps"],
)
def test_usage_errors_come_before_tensorflow(hermetic, case, fragment):
    code, imported, stderr = probe("a cat", *FAST, "--seed", "1", *case(hermetic))
    assert code == 2, stderr
    assert fragment in error_line(stderr)
    assert imported == [], f"{imported} imported before a usage error"
    assert not png_files(hermetic / "outputs")


def test_a_rerun_that_only_skips_imports_no_tensorflow(run_cli, hermetic):
    args = ["a lighthouse", *FAST, "--seed", "5", "--num-images", "2"]
    first = run_cli(*args)
    assert first.exit_code == 0, first.stderr
    made = png_files(hermetic / "outputs")
    assert len(made) == 2
    stamps = {path: path.stat().st_mtime_ns for path in made}

    code, imported, stderr = probe(*args)
    assert code == 0, stderr
    assert "done 0, skipped 2, failed 0" in stderr
    assert imported == [], f"{imported} imported by a rerun that only skips"
    assert {path: path.stat().st_mtime_ns for path in png_files(hermetic / "outputs")} == stamps
    assert len(read_manifest(hermetic / "outputs")) == 2
