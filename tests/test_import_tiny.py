"""The success path of `sdgen import` and the store, in seconds: the tiny model written
out as an SD single-file checkpoint (through the converter's own name index, inverted),
imported, listed, and drawing exactly what `--model tiny` draws.

tiny has SD 1.x's layout at small widths, so its checkpoint has SD 1.x's tensor names
at tiny shapes; the full-size conversion is proven against diffusers in
tests/reference/."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import pixels, tiny_checkpoint

SIZE = ["--width", "64", "--height", "64", "--steps", "2", "--seed", "5"]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The checkpoint, written once for the module (building tiny takes seconds)."""
    path = tmp_path_factory.mktemp("checkpoint") / "tiny.safetensors"
    tensors, count = tiny_checkpoint(path)
    return path, tensors, count


@pytest.fixture
def tiny_file(written):
    return written[0]


def test_every_weight_of_tiny_has_one_checkpoint_tensor(written):
    _, tensors, count = written
    assert len(tensors) == count


def test_imported_tiny_checkpoint_draws_what_tiny_draws(tiny_file, run_cli, tmp_path):
    result = run_cli("import", tiny_file, "--name", "my-tiny")
    assert result.exit_code == 0, result.stderr
    assert "imported my-tiny" in result.stderr and "tiny, epsilon, 128 px" in result.stderr

    listed = run_cli("models", "--json")
    (row,) = [row for row in json.loads(listed.stdout)["models"] if row["name"] == "my-tiny"]
    assert row | {"description": None} == {
        "name": "my-tiny",
        "family": "tiny",
        "prediction_type": "epsilon",
        "default_size": 128,
        "imported": True,
        "description": None,
        "availability": "present",
        "download_bytes": 0,
        "first_run": "present",
    }

    ours = run_cli("--model", "my-tiny", "a lighthouse", *SIZE, "--out", tmp_path / "a.png")
    assert ours.exit_code == 0, ours.stderr
    theirs = run_cli("--model", "tiny", "a lighthouse", *SIZE, "--out", tmp_path / "b.png")
    assert theirs.exit_code == 0, theirs.stderr
    mine, reference = pixels(tmp_path / "a.png"), pixels(tmp_path / "b.png")
    assert mine.std() > 1  # an image, not a flat fill
    np.testing.assert_array_equal(mine, reference)


def test_checkpoint_option_converts_once_then_reuses(tiny_file, run_cli, tmp_path):
    first = run_cli("--checkpoint", tiny_file, "a cat", *SIZE, "--out", tmp_path / "1.png")
    assert first.exit_code == 0, first.stderr
    again = run_cli("--checkpoint", tiny_file, "a dog", *SIZE, "--out", tmp_path / "2.png")
    assert again.exit_code == 0, again.stderr
    listed = json.loads(run_cli("models", "--json").stdout)["models"]
    assert len([row for row in listed if row["imported"]]) == 1  # converted once
