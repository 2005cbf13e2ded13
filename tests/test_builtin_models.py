"""Built-in models published as one SD checkpoint (``sd-v1.5``): downloaded once, checked
against the published sha256, converted into the model store on first use, the download
deleted; and what ``sdgen models`` says each model needs.

The real checkpoint is 4.3 GB, so the path runs on a test catalog whose extra model,
``tiny-hub``, publishes the tiny model written out as an SD 1.x checkpoint on a local
HTTP server; the full-size conversion is proven against diffusers in tests/reference/.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import pixels, tiny_checkpoint
from local_server import sha256

from sdgen import registry
from sdgen.catalog import get_model_spec
from sdgen.store import store_dir
from sdgen.weights import cache_dir, find_cached

SIZE = ["--width", "64", "--height", "64", "--steps", "2", "--seed", "5"]
NAME = "v1-5-tiny.safetensors"


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("checkpoint") / NAME
    tiny_checkpoint(path)
    return path.read_bytes()


def _catalog(tmp_path, monkeypatch, url: str, digest: str, size: int) -> None:
    """The built-in catalog plus ``tiny-hub``, a tiny model published as a checkpoint."""
    text = registry.CATALOG.read_text("utf-8") + (
        '\n[models."tiny-hub"]\nfamily = "tiny"\ndefault_size = 128\n'
        'description = "tiny, as a published checkpoint"\n\n'
        f'[models."tiny-hub".checkpoint]\nfilename = "{NAME}"\nurl = "{url}"\n'
        f'sha256 = "{digest}"\nsize = {size}\n'
    )
    path = tmp_path / "models.toml"
    path.write_text(text, "utf-8")
    monkeypatch.setattr(registry, "CATALOG", path)
    registry.model_specs.cache_clear()


@pytest.fixture
def hub(tmp_path, monkeypatch, server, checkpoint_bytes):
    """The test catalog, with the checkpoint on the server under its real sha256."""
    (server.folder / NAME).write_bytes(checkpoint_bytes)
    _catalog(
        tmp_path, monkeypatch, server.url(NAME), sha256(checkpoint_bytes), len(checkpoint_bytes)
    )
    yield server
    registry.model_specs.cache_clear()


def _models(run_cli) -> dict:
    result = run_cli("models", "--json")
    assert result.exit_code == 0, result.stderr
    return {row["name"]: row for row in json.loads(result.stdout)["models"]}


def test_the_published_checkpoints_are_in_the_catalog():
    v15 = get_model_spec("sd-v1.5")
    assert v15.family == "sd-v1" and not v15.files
    assert v15.checkpoint.filename == "v1-5-pruned-emaonly.safetensors"
    assert v15.checkpoint.url.startswith("https://huggingface.co/")
    assert re.fullmatch(r"[0-9a-f]{64}", v15.checkpoint.sha256)
    assert v15.checkpoint.size > 4e9
    v21 = get_model_spec("sd-v2.1")
    assert v21.family == "sd-v2" and {f.role for f in v21.files} == {
        "text_encoder",
        "diffusion_model",
        "decoder",
    }
    # SD 2.1 uses SD's decoder: the very file sd-v1.4 publishes
    assert v21.file_for("decoder") == get_model_spec("sd-v1.4").file_for("decoder")


def test_first_use_downloads_converts_and_deletes_the_download(hub, run_cli, tmp_path):
    before = _models(run_cli)["tiny-hub"]
    assert before["availability"] == "download"
    assert before["download_bytes"] == len((hub.folder / NAME).read_bytes())
    assert before["first_run"].endswith(", then convert")

    first = run_cli("--model", "tiny-hub", "a lighthouse", *SIZE, "--out", tmp_path / "a.png")
    assert first.exit_code == 0, first.stderr
    assert f"converting {NAME} into the model store (once)" in first.stderr
    assert hub.requests == [f"/{NAME}"]
    info = json.loads((store_dir() / "tiny-hub" / "model.json").read_text())
    assert info["source_sha256"] == sha256((hub.folder / NAME).read_bytes())
    assert info["family"] == "tiny"
    assert not (cache_dir() / "weights" / "tiny-hub" / NAME).exists()  # deleted once converted

    # the converted weights are tiny's own: the same image as --model tiny
    reference = run_cli("--model", "tiny", "a lighthouse", *SIZE, "--out", tmp_path / "b.png")
    assert reference.exit_code == 0, reference.stderr
    mine = pixels(tmp_path / "a.png")
    assert mine.std() > 1
    np.testing.assert_array_equal(mine, pixels(tmp_path / "b.png"))

    again = run_cli("--model", "tiny-hub", "a dog", *SIZE, "--offline", "--out", tmp_path / "c.png")
    assert again.exit_code == 0, again.stderr
    assert "converting" not in again.stderr and hub.requests == [f"/{NAME}"]
    after = _models(run_cli)
    assert after["tiny-hub"]["availability"] == "present"
    assert after["tiny-hub"]["download_bytes"] == 0
    assert not after["tiny-hub"]["imported"]  # listed once, as the built-in it is


def test_a_checkpoint_with_another_sha256_is_refused_and_nothing_is_kept(
    tmp_path, monkeypatch, server, checkpoint_bytes, run_cli
):
    (server.folder / NAME).write_bytes(checkpoint_bytes)
    _catalog(tmp_path, monkeypatch, server.url(NAME), "0" * 64, len(checkpoint_bytes))
    try:
        result = run_cli("--model", "tiny-hub", "a cat", *SIZE)
    finally:
        registry.model_specs.cache_clear()
    assert result.exit_code != 0
    assert f"its sha256 is {sha256(checkpoint_bytes)}, expected {'0' * 64}" in result.stderr
    assert not (store_dir() / "tiny-hub").exists()
    assert not list((cache_dir() / "weights").rglob("*.safetensors"))
    assert not list(tmp_path.joinpath("work").rglob("*.png"))


def test_offline_names_the_checkpoint_and_where_it_goes(hub, run_cli):
    result = run_cli("--model", "tiny-hub", "a cat", *SIZE, "--offline")
    assert result.exit_code != 0 and hub.requests == []
    (line,) = [text for text in result.stderr.splitlines() if text.startswith("Error:")]
    folder = cache_dir() / "weights" / "tiny-hub"
    assert f"weights file {NAME} of tiny-hub is missing" in line
    assert f"download it from {hub.url(NAME)} into {folder}" in line
    assert "--model tiny" in line and "--weights DIR" not in line


def test_a_checkpoint_put_in_the_cache_by_hand_is_converted_offline(hub, run_cli, tmp_path):
    folder = cache_dir() / "weights" / "tiny-hub"
    folder.mkdir(parents=True)
    (folder / NAME).write_bytes((hub.folder / NAME).read_bytes())
    assert _models(run_cli)["tiny-hub"]["first_run"] == "convert"
    result = run_cli(
        "--model", "tiny-hub", "a cat", *SIZE, "--offline", "--out", tmp_path / "x.png"
    )
    assert result.exit_code == 0, result.stderr
    assert hub.requests == [] and "converting" in result.stderr


def test_models_says_what_a_first_run_downloads(run_cli):
    rows = _models(run_cli)
    assert rows["tiny"]["availability"] == "generated" and rows["tiny"]["download_bytes"] == 0
    v14 = get_model_spec("sd-v1.4")
    assert rows["sd-v1.4"]["availability"] == "download"
    assert rows["sd-v1.4"]["download_bytes"] == sum(f.size for f in v14.files)

    # two of the three files in the cache (unverified: listing never hashes gigabytes)
    folder = cache_dir() / "weights" / "sd-v1.4"
    folder.mkdir(parents=True)
    for role in ("text_encoder", "decoder"):
        (folder / v14.file_for(role).filename).write_bytes(b"x")
    rows = _models(run_cli)
    assert rows["sd-v1.4"]["availability"] == "partial"
    assert rows["sd-v1.4"]["download_bytes"] == v14.file_for("diffusion_model").size
    # sd-v2.1 finds SD's decoder in sd-v1.4's folder instead of downloading it again
    v21 = get_model_spec("sd-v2.1")
    assert find_cached(v21, v21.file_for("decoder"), verify=False) == folder / "kcv_decoder.h5"
    assert rows["sd-v2.1"]["download_bytes"] == sum(
        f.size for f in v21.files if f.role != "decoder"
    )

    text = run_cli("models").stdout.splitlines()
    assert text[0].split()[:4] == ["model", "family", "prediction", "size"]
    (v14_line,) = [line for line in text if line.startswith("sd-v1.4 ")]
    assert "download 3.4 GB" in v14_line
