"""`sdgen import`, `sdgen models` and `--checkpoint`: bad input, and the model store.

Converting real weights is proven at full size in tests/reference; these tests drive the
CLI and check that nothing half-written is ever left in the store.
"""

from __future__ import annotations

import json
import os

import pytest

from sdgen.store import store_dir


def store_contents():
    folder = store_dir()
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def fake_imported(name, **info):
    folder = store_dir() / name
    folder.mkdir(parents=True)
    metadata = {"family": "sd-v1", "prediction_type": "epsilon", "default_size": 512}
    (folder / "model.json").write_text(json.dumps({**metadata, **info, "source": "x.ckpt"}))
    return folder


def assert_error(result, status, *fragments):
    assert result.exit_code == status, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("Error: ") and "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in line, line


@pytest.mark.parametrize("name", ["a/b", "..", "x\\y", "", "-lead", "sd-v1.4"])
def test_bad_names(run_cli, hermetic, name):
    (hermetic / "m.safetensors").write_bytes(b"x")
    result = run_cli("import", "m.safetensors", "--name", name)
    assert_error(result, 2, "name")
    assert store_contents() == []


def test_missing_file(run_cli):
    assert_error(run_cli("import", "nope.safetensors", "--name", "m"), 2, "does not exist")
    assert store_contents() == []


def test_not_a_checkpoint(run_cli, hermetic):
    (hermetic / "notes.safetensors").write_bytes(b"these are not tensors" * 10)
    result = run_cli("import", "notes.safetensors", "--name", "m")
    assert result.exit_code in (1, 2)
    assert_error(result, result.exit_code, "notes.safetensors")
    assert store_contents() == []


def test_truncated_checkpoint(run_cli, hermetic):
    import numpy as np
    from safetensors.numpy import save_file

    path = hermetic / "cut.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": np.zeros((320, 4, 3, 3))}, path)
    path.write_bytes(path.read_bytes()[:-100])
    result = run_cli("import", str(path), "--name", "m")
    assert_error(result, result.exit_code, "cut.safetensors")
    assert result.exit_code in (1, 2) and store_contents() == []


def test_name_taken_unless_overwrite(run_cli, hermetic):
    fake_imported("mine")
    (hermetic / "m.safetensors").write_bytes(b"x")
    assert_error(
        run_cli("import", "m.safetensors", "--name", "mine"), 2, "already exists", "--overwrite"
    )
    assert store_contents() == ["mine"]


def test_models_lists_built_in_and_imported(run_cli):
    fake_imported("my-sd15", default_size=512)
    fake_imported("my-768", family="sd-v2", prediction_type="v_prediction", default_size=768)
    (store_dir() / ".half-written.x1").mkdir()  # a staging folder is never listed
    result = run_cli("models", "--json")
    assert result.exit_code == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)["models"]}
    assert set(rows) == {
        "sd-v1.4",
        "sd-v1.5",
        "sd-v2.1",
        "tiny",
        "tiny-inpainting",
        "my-sd15",
        "my-768",
    }
    assert rows["my-768"]["prediction_type"] == "v_prediction"
    assert rows["my-768"]["default_size"] == 768 and rows["my-768"]["imported"]
    assert not rows["tiny"]["imported"]
    text = run_cli("models").stdout
    assert "my-sd15" in text and "sd-v1.4" in text


def test_generate_with_an_imported_model_missing_files(run_cli):
    fake_imported("broken")
    result = run_cli("x", "--model", "broken", "--width", "64", "--height", "64", "--steps", "1")
    assert_error(result, 1, "kcv_encoder.h5", "broken")


def test_checkpoint_is_hashed_once_until_it_changes(hermetic, monkeypatch):
    from pathlib import Path

    from sdgen import store, weights

    path = hermetic / "model.safetensors"
    path.write_bytes(b"weights" * 1000)
    hashed = []
    real = weights.sha256_of
    monkeypatch.setattr(weights, "sha256_of", lambda p: hashed.append(Path(p)) or real(p))
    digest = store.source_sha256(path)
    fake_imported(f"ckpt-{digest[:12]}")  # as if an earlier --checkpoint run converted it
    for _ in range(2):  # what each later --checkpoint run does
        assert store.checkpoint_model(path).name == f"ckpt-{digest[:12]}"
    assert hashed == [path]
    before = path.stat().st_mtime_ns
    path.write_bytes(b"changed" * 1000)  # the same size, and a modification time later
    os.utime(path, ns=(before + 10**9, before + 10**9))  # even on a coarse clock
    assert store.source_sha256(path) != digest
    assert hashed == [path, path]
