"""Shared fixtures: a hermetic home, cache and output folder for every test, a helper
that runs the real CLI entry point in-process, and one tiny pipeline per session."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from sdgen.cli import main

# Keep TensorFlow quiet in the test log.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

TINY = ["--model", "tiny", "--width", "128", "--height", "128", "--steps", "2"]


@pytest.fixture(autouse=True)
def hermetic(tmp_path, monkeypatch):
    """No test reads or writes the real home, cache or working folder."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("SDGEN_CACHE", str(tmp_path / "sdgen-cache"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    monkeypatch.setenv("SDGEN_HOME", str(tmp_path / "sdgen-home"))
    monkeypatch.delenv("SDGEN_WEIGHTS_MIRROR", raising=False)
    monkeypatch.delenv("SDGEN_RUNTIME", raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def run_cli():
    """Run ``sdgen ARGS`` through the real entry point (``main``), capturing its streams."""

    def run(*args: str) -> CliResult:
        runner = CliRunner()
        with runner.isolation() as (stdout, stderr, _):
            try:
                main([str(a) for a in args])
                code = 0
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
            return CliResult(code, stdout.getvalue().decode(), stderr.getvalue().decode())

    return run


@pytest.fixture(scope="session")
def tiny_pipeline():
    from sdgen.pipeline import load_pipeline

    return load_pipeline("tiny", width=128, height=128)


@pytest.fixture
def chromium() -> Path:
    from browser import CHROMIUM

    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing (install it with: apt-get install -y chromium)"
        if os.environ.get("SDGEN_REQUIRE_CHROMIUM") == "1":
            pytest.fail(f"SDGEN_REQUIRE_CHROMIUM=1 but {reason}")
        pytest.skip(reason)
    return CHROMIUM


def only_line(text: str) -> str:
    """The single non-empty line of ``text``; fails if there are more."""
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got: {text!r}"
    return lines[0]


def png_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.png"))
