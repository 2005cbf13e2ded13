"""Prompts as people write them, through the real CLI and the tiny model: any length,
A1111 weights, clip skip and textual-inversion embeddings, recorded in the manifest and
the infotext, and refused with one line before any work when they cannot be used."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from conftest import FAST, LONG_PROMPT, only_line, pixels, png_files
from conftest import write_embedding as _embedding

from sdgen.batch.identity import settings_from_infotext
from sdgen.output.manifest import read_manifest
from sdgen.output.png import read_infotext
from sdgen.text.chunks import chunk_prompt
from sdgen.text.tokenizer import load_tokenizer


@pytest.fixture
def embeddings(hermetic, tmp_path):
    """``$SDGEN_HOME/embeddings`` (the default folder) with EasyNegative in it."""
    folder = tmp_path / "sdgen-home" / "embeddings"
    _embedding(folder, "EasyNegative", 2)
    return folder


def test_the_long_prompt_is_longer_than_one_chunk():
    chunks = chunk_prompt(load_tokenizer(), LONG_PROMPT)
    assert chunks.token_count > 150 and len(chunks.chunks) >= 3


def test_a_long_weighted_prompt_with_a_negative_embedding_generates(run_cli, embeddings):
    args = [LONG_PROMPT, *FAST, "--seed", "11", "--negative-prompt"]
    negative = "EasyNegative, (lowres:1.2), jpeg artifacts"
    result = run_cli(*args, negative, "--clip-skip", "2", "--emphasis", "no-norm")
    assert result.exit_code == 0, result.stderr
    [path] = png_files(embeddings.parents[1] / "work" / "outputs")
    [record] = read_manifest(path.parent)
    sha256 = hashlib.sha256((embeddings / "EasyNegative.safetensors").read_bytes()).hexdigest()
    assert record["embeddings"] == {"EasyNegative": sha256}
    assert (record["clip_skip"], record["emphasis"]) == (2, "no-norm")
    assert record["prompt_syntax"] == "a1111-no-norm"
    text = read_infotext(path)
    assert f'TI hashes: "EasyNegative: {sha256[:12]}"' in text
    assert "Clip skip: 2" in text and "Emphasis: No norm" in text
    # the infotext read back gives the settings the image was made with
    settings = settings_from_infotext(text)
    assert settings["prompt"] == LONG_PROMPT and settings["negative_prompt"] == negative
    assert (settings["clip_skip"], settings["emphasis"]) == (2, "no-norm")
    assert settings["embeddings"] == {"EasyNegative": sha256[:12]}
    for key in ("steps", "seed", "width", "height", "sampler", "guidance_scale", "model"):
        assert settings[key] == record[key], key
    # the embedding's vectors are what the negative prompt said: without the file the
    # name is plain text, and the image is another
    (embeddings / "EasyNegative.safetensors").unlink()
    plain = run_cli(*args, negative, "--clip-skip", "2", "--emphasis", "no-norm", "--out", "x.png")
    assert plain.exit_code == 0, plain.stderr
    assert not np.array_equal(pixels(path), pixels(embeddings.parents[1] / "work" / "x.png"))


def test_a_prompt_without_syntax_draws_what_it_drew_before(run_cli, hermetic):
    """Brackets off (0.1.0's reading) and on give one image for a plain prompt."""
    args = ["a lighthouse on a cliff, stormy sea", *FAST, "--seed", "4"]
    assert run_cli(*args, "--out", "off.png", "--emphasis", "off").exit_code == 0
    assert run_cli(*args, "--out", "on.png").exit_code == 0
    assert np.array_equal(pixels(hermetic / "off.png"), pixels(hermetic / "on.png"))


def test_weights_change_the_image_and_off_reads_brackets_as_text(run_cli, hermetic):
    args = ["a (lighthouse:1.5) on a cliff, [stormy sea]", *FAST, "--seed", "4"]
    for emphasis in ("original", "no-norm", "ignore", "off"):
        result = run_cli(*args, "--out", f"{emphasis}.png", "--emphasis", emphasis)
        assert result.exit_code == 0, result.stderr
    images = {e: pixels(hermetic / f"{e}.png") for e in ("original", "no-norm", "ignore", "off")}
    assert not np.array_equal(images["original"], images["no-norm"])
    assert not np.array_equal(images["original"], images["ignore"])
    assert not np.array_equal(images["ignore"], images["off"])  # brackets as text


@pytest.mark.parametrize(
    ("negative", "make", "expected"),
    [
        ("broken", lambda f: (f / "broken.pt").write_bytes(b"not a torch file"), "broken.pt"),
        (
            "wide",
            lambda f: _embedding(f, "wide", 1, width=768),
            "768 wide",
        ),
        ("embedding:missing", lambda f: None, "no embedding named 'missing'"),
    ],
)
def test_an_embedding_that_cannot_be_used_stops_the_run_before_any_work(
    run_cli, embeddings, negative, make, expected
):
    make(embeddings)
    result = run_cli("a cat", *FAST, "--negative-prompt", negative)
    assert result.exit_code == 2
    assert expected in only_line(result.stderr)
    assert "loading" not in result.stderr
    assert not (embeddings.parents[1] / "work" / "outputs").exists()


def test_a_broken_embedding_that_no_prompt_uses_is_no_error(run_cli, embeddings):
    (embeddings / "broken.pt").write_bytes(b"not a torch file")
    result = run_cli("a cat", *FAST, "--negative-prompt", "EasyNegative", "--out", "a.png")
    assert result.exit_code == 0, result.stderr


def test_another_embeddings_folder(run_cli, hermetic, tmp_path):
    folder = tmp_path / "mine"
    _embedding(folder, "style-x", 3)
    args = ["a cat, embedding:style-x", *FAST, "--embeddings", folder, "--json", "--out", "a.png"]
    result = run_cli(*args)
    assert result.exit_code == 0, result.stderr
    [image] = json.loads(result.stdout)["images"]
    assert list(image["embeddings"]) == ["style-x"]


@pytest.mark.parametrize("value", ["0", "3"])
def test_clip_skip_out_of_range_names_the_range(run_cli, hermetic, value):
    result = run_cli("a cat", *FAST, "--clip-skip", value)
    assert result.exit_code == 2
    line = only_line(result.stderr)
    assert "clip skip must be from 1" in line and value in line
    if value == "3":
        assert "from 1 to 2" in line  # the tiny model's text encoder has 2 layers
