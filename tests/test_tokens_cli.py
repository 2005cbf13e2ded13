"""`sdgen tokens` (how CLIP sees a prompt) and the embeddings `sdgen models` lists: the
real CLI, on prompts whose chunks, weights and embeddings the text stage decides."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from sdgen.text.tokenizer import load_tokenizer

CONFORMANCE = "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky)))."
#: 16 phrases of 5 tokens and a comma: the 75th token falls in the 13th phrase, so the
#: first chunk is cut at the comma before it.
LONG = ", ".join(["a big red fluffy cat"] * 16)


def embedding_file(folder: Path, name: str, vectors: int, width: int = 768) -> Path:
    """A textual-inversion embedding (``emb_params``) of random vectors."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.safetensors"
    rng = np.random.default_rng(vectors)
    save_file({"emb_params": rng.standard_normal((vectors, width)).astype(np.float32)}, path)
    return path


def tokens_json(run_cli, *args) -> dict:
    result = run_cli("tokens", *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def assert_one_line_error(result, status: int, *parts: str):
    assert result.exit_code == status, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert result.stdout == ""
    for part in parts:
        assert part in lines[0], lines[0]


# -- what the prompt becomes --------------------------------------------------------------


def test_the_conformance_prompt_shows_a1111s_weights(run_cli):
    result = run_cli("tokens", CONFORMANCE)
    assert result.exit_code == 0, result.stderr
    text = result.stdout
    for word in ("house(1.573)", "hill(0.55)", "sky(1.4641)", "sun(1.1)", " on "):
        assert word in text, text
    count = len(load_tokenizer().tokens("a house on a hill, sun, sky."))  # the brackets gone
    assert f"Prompt: {count}/75 tokens in 1 chunk" in text
    assert f"Chunk 1 (tokens 1-{count}, {count} of 75):" in text

    data = tokens_json(run_cli, CONFORMANCE)
    weights = {t["text"].strip(): t["weight"] for t in data["chunks"][0]["tokens"]}
    assert weights["house"] == pytest.approx(1.573) and weights["on"] == 1.0
    assert weights["hill"] == pytest.approx(0.55) and weights["sky"] == pytest.approx(1.4641)
    assert data["prompt"] == CONFORMANCE and data["counted"] == f"{count}/75"
    assert "negative_prompt" not in data


def test_a_long_prompt_is_cut_at_a_comma_and_says_which_tokens_went_where(run_cli):
    tokenizer = load_tokenizer()
    data = tokens_json(run_cli, LONG)
    first, second = data["chunks"]
    # the comma backtrack: chunk 1 ends on a comma, before its 75th token
    assert first["tokens"][-1]["id"] == tokenizer.comma
    assert len(first["tokens"]) < 75 and first["padding"] == 75 - len(first["tokens"])
    assert (first["first"], first["last"]) == (1, len(first["tokens"]))
    assert second["first"] == first["last"] + 1
    assert second["last"] == first["last"] + len(second["tokens"])
    ids = [t["id"] for chunk in data["chunks"] for t in chunk["tokens"]]
    assert ids == tokenizer.tokens(LONG)  # nothing lost, nothing repeated
    assert [t["index"] for chunk in data["chunks"] for t in chunk["tokens"]] == list(
        range(1, len(ids) + 1)
    )
    # A1111's count: 75 for the full chunk, then the last one's tokens
    assert data["token_count"] == 75 + len(second["tokens"])
    assert data["counted"] == f"{data['token_count']}/150" and data["context_length"] == 154

    text = run_cli("tokens", LONG).stdout
    assert f"Prompt: {data['counted']} tokens in 2 chunks" in text
    assert f"Chunk 1 (tokens 1-{first['last']}, {first['last']} of 75):" in text
    assert f"Chunk 2 (tokens {second['first']}-{second['last']}," in text
    assert (
        text.split("Chunk 2")[1].count("fluffy") == 4
    )  # the last 4 phrases: 12 of 6 tokens fill 72


def test_break_starts_a_new_chunk(run_cli):
    data = tokens_json(run_cli, "a castle BREAK (fog:0.8)")
    assert [[t["text"] for t in chunk["tokens"]] for chunk in data["chunks"]] == [
        ["a ", "castle "],
        ["fog "],
    ]
    assert data["chunks"][1]["tokens"][0]["weight"] == pytest.approx(0.8)
    assert data["counted"] == "76/150"
    assert "fog(0.8)" in run_cli("tokens", "a castle BREAK (fog:0.8)").stdout


def test_a_word_split_by_bpe_is_shown_in_its_pieces(run_cli):
    tokenizer = load_tokenizer()
    pieces = [tokenizer.token_text(t).strip() for t in tokenizer.tokens("photorealistic")]
    assert len(pieces) > 1
    assert "|".join(pieces) + "(1.2)" in run_cli("tokens", "(photorealistic:1.2)").stdout


def test_a_weight_that_is_no_number_is_literal_text(run_cli):
    result = run_cli("tokens", "(cat:abc)")
    assert "cat(1.1) :(1.1) abc(1.1)" in result.stdout, result.stdout
    data = tokens_json(run_cli, "(cat:abc)")
    tokens = data["chunks"][0]["tokens"]
    assert [t["text"] for t in tokens] == ["cat ", ": ", "abc "]
    assert [t["weight"] for t in tokens] == [pytest.approx(1.1)] * 3


@pytest.mark.parametrize(
    ("emphasis", "texts", "weight"),
    [
        ("original", ["masterpiece "], 1.2),
        ("No norm", ["masterpiece "], 1.2),  # A1111's label
        ("ignore", ["masterpiece "], 1.0),
        ("off", ["(", "masterpiece ", ":", "1", ".", "2", ")"], 1.0),
    ],
)
def test_emphasis_modes(run_cli, emphasis, texts, weight):
    data = tokens_json(run_cli, "(masterpiece:1.2)", "--emphasis", emphasis)
    tokens = data["chunks"][0]["tokens"]
    assert [t["text"].strip() or t["text"] for t in tokens] == [t.strip() for t in texts]
    assert tokens[texts.index("masterpiece ")]["weight"] == pytest.approx(weight)
    assert data["emphasis"] in ("original", "no-norm", "ignore", "off")


def test_embeddings_in_prompt_and_negative_prompt(run_cli, tmp_path):
    folder = tmp_path / "embeddings"
    easy = embedding_file(folder, "EasyNegative", 2)
    embedding_file(folder, "unused", 1)
    sha256 = hashlib.sha256(easy.read_bytes()).hexdigest()
    args = ("a cat", "--negative-prompt", "EasyNegative, (embedding:EasyNegative:1.2), blurry")
    data = tokens_json(run_cli, *args, "--embeddings", folder)
    assert data["embeddings"] == []
    negative = data["negative_prompt"]
    assert negative["text"] == args[2]
    assert negative["embeddings"] == [
        {
            "name": "EasyNegative",
            "vectors": 2,
            "width": 768,
            "sha256": sha256,
            "shorthash": sha256[:12],
            "path": str(easy),
        }
    ]
    slots = [t for t in negative["chunks"][0]["tokens"] if t["embedding"]]
    assert [(t["embedding"], t["vector"], t["weight"]) for t in slots] == [
        ("EasyNegative", 1, 1.0),
        ("EasyNegative", 2, 1.0),
        ("EasyNegative", 1, pytest.approx(1.2)),
        ("EasyNegative", 2, pytest.approx(1.2)),
    ]
    assert negative["token_count"] == 7  # 2 + "," + 2 + "," + "blurry"

    text = run_cli("tokens", *args, "--embeddings", folder).stdout
    assert "<EasyNegative: 2 vectors> , <EasyNegative: 2 vectors>(1.2) , blurry" in text
    assert f"EasyNegative: 2 vectors, shorthash {sha256[:12]}, {easy}" in text
    assert "Negative prompt: 7/75 tokens in 1 chunk" in text and "unused" not in text


def test_embeddings_come_from_sdgen_home_by_default(run_cli, tmp_path):
    embedding_file(Path(os.environ["SDGEN_HOME"]) / "embeddings", "style", 3, width=64)
    data = tokens_json(run_cli, "a style cat", "--model", "tiny")
    assert data["family"] == "tiny" and data["pad_token"] == load_tokenizer().end_of_text
    assert [e["name"] for e in data["embeddings"]] == ["style"]
    assert data["token_count"] == 5


def test_sd2_pads_with_zero(run_cli, hermetic):
    from test_import import fake_imported

    fake_imported("my-sd2", family="sd-v2")
    assert tokens_json(run_cli, "a cat", "--model", "my-sd2")["pad_token"] == 0


# -- bad input ----------------------------------------------------------------------------


def test_an_unknown_model_is_one_line(run_cli):
    assert_one_line_error(run_cli("tokens", "a cat", "--model", "nope"), 2, "unknown model 'nope'")


def test_an_unknown_emphasis_is_one_line(run_cli):
    assert_one_line_error(
        run_cli("tokens", "a cat", "--emphasis", "loud"), 2, "emphasis must be one of original"
    )


def test_an_unreadable_embedding_names_its_file(run_cli, tmp_path):
    folder = tmp_path / "embeddings"
    folder.mkdir()
    (folder / "broken.pt").write_bytes(b"not an embedding")
    result = run_cli("tokens", "a cat", "--negative-prompt", "broken", "--embeddings", folder)
    assert_one_line_error(result, 2, str(folder / "broken.pt"))


def test_an_embedding_of_the_wrong_width_names_its_file(run_cli, tmp_path):
    path = embedding_file(tmp_path / "embeddings", "wide", 1, width=1024)
    result = run_cli("tokens", "wide cat", "--embeddings", path.parent)
    assert_one_line_error(result, 2, str(path), "1024 wide", "768 wide")


def test_an_unknown_embedding_tag_is_one_line(run_cli, tmp_path):
    result = run_cli("tokens", "embedding:ghost cat", "--embeddings", tmp_path)
    assert_one_line_error(result, 2, "no embedding named 'ghost'")


def test_tokens_never_imports_tensorflow(tmp_path):
    """Run in a fresh interpreter: the command answers without TensorFlow or Keras."""
    code = (
        "import sys\n"
        "from sdgen.cli import main\n"
        "try:\n"
        "    main(['tokens', '(masterpiece:1.2), a cat', '--negative-prompt', 'blurry'])\n"
        "except SystemExit as exit_:\n"
        "    assert not exit_.code, exit_.code\n"
        "print('imported', sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n"
    )
    env = {**os.environ, "SDGEN_HOME": str(tmp_path)}
    env["PYTHONPATH"] = str(Path(__file__).parent.parent)  # this checkout's sdgen
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "masterpiece(1.2)" in result.stdout
    assert result.stdout.strip().endswith("imported []"), result.stdout


# -- sdgen models lists the embeddings ----------------------------------------------------


def test_models_lists_embeddings_with_their_sizes_and_problems(run_cli, tmp_path):
    folder = tmp_path / "embeddings"
    good = embedding_file(folder, "EasyNegative", 2)
    embedding_file(folder / "sd2", "wide", 4, width=1024)
    (folder / "broken.pt").write_bytes(b"garbage")
    result = run_cli("models", "--json", "--embeddings", folder)
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert {row["name"] for row in data["models"]} == {
        "sd-v1.4",
        "sd-v1.5",
        "sd-v2.1",
        "tiny",
        "tiny-inpainting",
    }
    assert data["embeddings_folder"] == str(folder)
    rows = {row["name"]: row for row in data["embeddings"]}
    assert list(rows) == ["broken", "EasyNegative", "wide"]
    assert rows["EasyNegative"] | {"sha256": None} == {
        "name": "EasyNegative",
        "path": str(good),
        "vectors": 2,
        "width": 768,
        "sha256": None,
        "error": None,
        "families": ["sd-v1"],
    }
    assert rows["EasyNegative"]["sha256"] == hashlib.sha256(good.read_bytes()).hexdigest()
    assert (rows["wide"]["vectors"], rows["wide"]["families"]) == (4, ["sd-v2"])
    assert (
        rows["broken"]["vectors"] is None and str(folder / "broken.pt") in rows["broken"]["error"]
    )

    text = run_cli("models", "--embeddings", folder).stdout
    assert f"embeddings in {folder}:" in text and "sd-v1.4" in text
    lines = {line.split()[0]: line for line in text.splitlines() if line.strip()}
    assert "2 vectors x 768 (sd-v1)" in lines["EasyNegative"]
    assert "4 vectors x 1024 (sd-v2)" in lines["wide"]
    assert "unusable: " in lines["broken"] and "broken.pt" in lines["broken"]


def test_models_looks_in_sdgen_home_by_default(run_cli):
    folder = Path(os.environ["SDGEN_HOME"]) / "embeddings"
    assert f"no embeddings in {folder} (the folder does not exist)" in run_cli("models").stdout
    embedding_file(folder, "style", 1, width=64)
    data = json.loads(run_cli("models", "--json").stdout)
    assert [(e["name"], e["families"]) for e in data["embeddings"]] == [("style", ["tiny"])]
