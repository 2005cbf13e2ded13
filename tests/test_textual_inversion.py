"""Textual-inversion embeddings: real files written by torch and safetensors in each layout
people share, read back exactly; refused files (wrong width, SDXL, a pickle that runs code,
garbage); and a folder of them, with names found in prompt text in A1111's and ComfyUI's
forms."""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
import safetensors.torch
import torch

from sdgen.adapters.textual_inversion import (
    Embedding,
    EmbeddingError,
    EmbeddingLibrary,
    EmbeddingMatch,
    default_embeddings_dir,
    read_embedding,
)
from sdgen.errors import UsageError


def _vectors(n: int, width: int = 768, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).standard_normal((n, width), np.float32))


def _a1111_pt(path: Path, vectors: torch.Tensor) -> Path:
    """An embedding as A1111 saves it (``Embedding.save`` in its
    ``modules/textual_inversion/textual_inversion.py``): a trained Parameter under
    ``string_to_param["*"]``, beside these metadata keys."""
    torch.save(
        {
            "string_to_token": {"*": 265},
            "string_to_param": {"*": torch.nn.Parameter(vectors.clone())},
            "name": path.stem,
            "step": 1500,
            "sd_checkpoint": "e1441589",
            "sd_checkpoint_name": "v1-5-pruned-emaonly",
        },
        path,
    )
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("n", [1, 4])
def test_an_a1111_pt_file_gives_its_vectors(tmp_path, n):
    vectors = _vectors(n, seed=n)
    path = _a1111_pt(tmp_path / "bad-hands-5.pt", vectors)
    embedding = read_embedding(path, width=768)
    assert isinstance(embedding, Embedding)
    assert embedding.name == "bad-hands-5"
    assert embedding.path == path
    assert embedding.vectors.dtype == np.float32
    assert embedding.vectors.shape == (n, 768)
    assert embedding.width == 768
    np.testing.assert_array_equal(embedding.vectors, vectors.numpy())
    assert embedding.sha256 == _sha256(path)
    assert embedding.shorthash == embedding.sha256[:12]
    assert not embedding.vectors.flags.writeable


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_vectors_come_back_as_float32(tmp_path, dtype):
    vectors = _vectors(2, seed=3).to(dtype)
    pt = _a1111_pt(tmp_path / "half.pt", vectors)
    tensors = tmp_path / "half.safetensors"
    safetensors.torch.save_file({"emb_params": vectors}, str(tensors))
    for path in (pt, tensors):
        embedding = read_embedding(path, width=768)
        assert embedding.vectors.dtype == np.float32
        np.testing.assert_array_equal(embedding.vectors, vectors.float().numpy())


def test_bfloat16_vectors_read_as_ml_dtypes_arrays_come_back_as_float32(tmp_path):
    """With ml_dtypes imported (TensorFlow does), safetensors hands out bfloat16 arrays
    instead of failing over to sdgen's own reader; both ways give float32."""
    import ml_dtypes

    assert ml_dtypes.bfloat16  # imported, and so registered with NumPy
    vectors = _vectors(2, seed=3).to(torch.bfloat16)
    path = tmp_path / "half.safetensors"
    safetensors.torch.save_file({"emb_params": vectors}, str(path))
    embedding = read_embedding(path, width=768)
    assert embedding.vectors.dtype == np.float32
    np.testing.assert_array_equal(embedding.vectors, vectors.float().numpy())


def test_safetensors_emb_params(tmp_path):
    vectors = _vectors(8, seed=5)
    path = tmp_path / "EasyNegative.safetensors"
    safetensors.torch.save_file({"emb_params": vectors}, str(path))
    embedding = read_embedding(path, width=768)
    assert embedding.name == "EasyNegative"
    np.testing.assert_array_equal(embedding.vectors, vectors.numpy())
    assert embedding.sha256 == _sha256(path)


def test_an_old_pt_file_with_emb_params(tmp_path):
    vectors = _vectors(2, seed=6)
    path = tmp_path / "old.pt"
    torch.save({"emb_params": vectors}, path)
    np.testing.assert_array_equal(read_embedding(path).vectors, vectors.numpy())


@pytest.mark.parametrize("shape", [(768,), (3, 768)])
def test_diffusers_learned_embeds_bin_and_safetensors(tmp_path, shape):
    vector = np.random.default_rng(7).standard_normal(shape, np.float32)
    binary = tmp_path / "learned_embeds.bin"
    torch.save({"<cat-toy>": torch.from_numpy(vector.copy())}, binary)
    tensors = tmp_path / "learned_embeds.safetensors"
    safetensors.numpy.save_file({"<cat-toy>": vector}, str(tensors))
    for path in (binary, tensors):
        embedding = read_embedding(path, width=768)
        assert embedding.name == "learned_embeds"
        np.testing.assert_array_equal(embedding.vectors, vector.reshape(-1, 768))
        assert embedding.sha256 == _sha256(path)


def test_an_sdxl_file_gives_the_half_of_the_encoders_width(tmp_path):
    clip_l, clip_g = _vectors(2, 768, seed=8), _vectors(2, 1280, seed=9)
    path = tmp_path / "sdxl.safetensors"
    safetensors.torch.save_file({"clip_l": clip_l, "clip_g": clip_g}, str(path))
    np.testing.assert_array_equal(read_embedding(path, width=768).vectors, clip_l.numpy())
    np.testing.assert_array_equal(read_embedding(path).vectors, clip_l.numpy())
    np.testing.assert_array_equal(read_embedding(path, width=1280).vectors, clip_g.numpy())
    with pytest.raises(EmbeddingError) as refused:
        read_embedding(path, width=1024)
    message = str(refused.value)
    assert str(path) in message and "SDXL" in message
    assert "768" in message and "1280" in message and "1024" in message


def test_an_sdxl_file_with_only_clip_g_is_refused_on_sd1(tmp_path):
    path = tmp_path / "g-only.safetensors"
    safetensors.torch.save_file({"clip_g": _vectors(1, 1280)}, str(path))
    with pytest.raises(EmbeddingError) as refused:
        read_embedding(path, width=768)
    message = str(refused.value)
    assert str(path) in message and "SDXL" in message and "clip_g 1280 wide" in message


def test_a_wrong_width_names_the_file(tmp_path):
    path = _a1111_pt(tmp_path / "sd2-style.pt", _vectors(2, 1024))
    with pytest.raises(EmbeddingError) as refused:
        read_embedding(path, width=768)
    assert str(refused.value) == (
        f"embedding {path} has vectors 1024 wide, but this model's text encoder is 768 wide "
        "(an SD 2.x embedding on an SD 1.x model?)"
    )
    assert refused.value.exit_code == 2 and isinstance(refused.value, UsageError)
    assert read_embedding(path, width=1024).width == 1024


class _System:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


class _Open:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.mark.parametrize("payload", [_System, _Open])
def test_a_pickle_that_runs_code_is_refused_and_not_run(tmp_path, payload):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    torch.save({"string_to_param": {"*": payload(marker)}, "name": "evil"}, path)
    with pytest.raises(EmbeddingError) as refused:
        read_embedding(path)
    assert str(refused.value).startswith(f"embedding evil: refusing to load {path}: ")
    assert not marker.exists()
    # The payload is real: an unrestricted unpickler runs it.
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("name", ["noise.pt", "noise.bin", "noise.safetensors"])
def test_garbage_bytes_are_refused_naming_the_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(1).bytes(300))
    with pytest.raises(EmbeddingError) as refused:
        read_embedding(path)
    assert str(path) in str(refused.value) and "could not read" in str(refused.value)


def test_files_that_are_not_embeddings_are_refused(tmp_path):
    checkpoint = tmp_path / "lora.safetensors"
    safetensors.torch.save_file({"a.weight": _vectors(2), "b.weight": _vectors(2)}, checkpoint)
    metadata_only = tmp_path / "meta.pt"
    torch.save({"name": "x", "step": 3}, metadata_only)
    truncated = tmp_path / "cut.safetensors"
    safetensors.torch.save_file({"emb_params": _vectors(2)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:-100])
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    integers = tmp_path / "ids.pt"
    torch.save({"emb_params": torch.arange(768)}, integers)
    cases = {
        checkpoint: "holds 2 tensors (a.weight, b.weight), where an embedding holds one",
        metadata_only: "no string_to_param",
        truncated: "could not read",
        empty: "empty",
        integers: "not floating point",
        tmp_path / "missing.pt": "could not read embedding",
    }
    for path, reason in cases.items():
        with pytest.raises(EmbeddingError) as refused:
            read_embedding(path)
        assert str(path) in str(refused.value) and reason in str(refused.value), path


def _library(tmp_path: Path) -> EmbeddingLibrary:
    folder = tmp_path / "embeddings"
    (folder / "negative").mkdir(parents=True)
    safetensors.torch.save_file({"emb_params": _vectors(8)}, folder / "EasyNegative.safetensors")
    _a1111_pt(folder / "negative" / "bad-hands-5.pt", _vectors(2, seed=1))
    _a1111_pt(folder / "negative" / "ng_deepnegative_v1_75t.pt", _vectors(75, seed=2))
    _a1111_pt(folder / "negative" / "bad.pt", _vectors(1, seed=3))
    _a1111_pt(folder / "negative" / "easynegative.pt", _vectors(1, seed=4))  # a duplicate
    _a1111_pt(folder / "verybadimagenegative_v1.3.pt", _vectors(6, seed=5))
    _a1111_pt(folder / "verybadimagenegative_v1.pt", _vectors(6, seed=6))
    _a1111_pt(folder / "bad prompt.pt", _vectors(1, seed=7))
    (folder / "notes.txt").write_text("not an embedding")
    (folder / ".hidden.pt").write_bytes(b"x")
    (folder / "placeholder.pt").write_bytes(b"")
    return EmbeddingLibrary(folder)


def test_a_library_lists_names_without_reading_files(tmp_path):
    library = _library(tmp_path)
    (library.folder / "broken.bin").write_bytes(b"not read by names()")
    assert library.names() == [
        "bad",
        "bad prompt",
        "bad-hands-5",
        "broken",
        "EasyNegative",
        "ng_deepnegative_v1_75t",
        "verybadimagenegative_v1",
        "verybadimagenegative_v1.3",
    ]
    # The first in sorted path order wins a name, in any case.
    assert library.path("easynegative") == library.folder / "EasyNegative.safetensors"
    assert library.path("BAD-HANDS-5") == library.folder / "negative" / "bad-hands-5.pt"
    assert library.path("notes") is None and library.path("placeholder") is None


def test_a_library_follows_linked_folders_once(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _a1111_pt(elsewhere / "linked-one.pt", _vectors(1))
    folder = tmp_path / "embeddings"
    folder.mkdir()
    (folder / "linked").symlink_to(elsewhere, target_is_directory=True)
    (elsewhere / "back").symlink_to(folder, target_is_directory=True)  # a loop
    library = EmbeddingLibrary(folder)
    assert library.names() == ["linked-one"]
    assert library.path("linked-one") == folder / "linked" / "linked-one.pt"


def test_find_both_forms_whole_words_longest_first(tmp_path):
    library = _library(tmp_path)
    text = (
        "masterpiece, easynegative, (bad-hands-5:1.2), embedding:ng_deepnegative_v1_75t.pt, "
        "bad hands, EasyNegativeV2, my-easynegative, bad_hands, bad-hands-50, [BAD]"
    )
    found = library.find(text)
    assert [(text[m.start : m.end], m.name) for m in found] == [
        ("easynegative", "EasyNegative"),
        ("bad-hands-5", "bad-hands-5"),
        ("embedding:ng_deepnegative_v1_75t.pt", "ng_deepnegative_v1_75t"),
        ("bad", "bad"),
        ("BAD", "bad"),
    ]
    assert all(isinstance(m, EmbeddingMatch) for m in found)
    assert all(a.end <= b.start for a, b in itertools.pairwise(found))
    assert library.find("a photo of a cat, highly detailed") == []
    # The longest name at a position wins, also where a shorter one ends at a word's end.
    text = "bad prompt, verybadimagenegative_v1.3, verybadimagenegative_v1.2"
    assert [(text[m.start : m.end], m.name) for m in library.find(text)] == [
        ("bad prompt", "bad prompt"),
        ("verybadimagenegative_v1.3", "verybadimagenegative_v1.3"),
        ("verybadimagenegative_v1", "verybadimagenegative_v1"),
    ]
    comfy = library.find("embedding:EasyNegative, embedding:bad-hands-5.")
    assert [(m.start, m.end, m.name) for m in comfy] == [
        (0, 22, "EasyNegative"),
        (24, 45, "bad-hands-5"),
    ]


def test_an_unknown_embedding_name_lists_what_is_there(tmp_path):
    library = _library(tmp_path)
    with pytest.raises(EmbeddingError) as refused:
        library.find("a cat, embedding:EasyPositive, easynegative")
    assert str(refused.value) == (
        f"no embedding named 'EasyPositive' in {library.folder}; found: bad, bad prompt, "
        "bad-hands-5, "
        "EasyNegative, ng_deepnegative_v1_75t, verybadimagenegative_v1, "
        "verybadimagenegative_v1.3"
    )
    with pytest.raises(EmbeddingError, match=re.escape("'bad-hands-5.v2'")):
        library.find("embedding:bad-hands-5.v2")
    with pytest.raises(EmbeddingError, match="no embedding named 'nothing'"):
        library.load("nothing")


@pytest.mark.parametrize("exists", [True, False])
def test_an_empty_or_missing_folder_is_an_empty_library(tmp_path, exists):
    folder = tmp_path / "none"
    if exists:
        folder.mkdir()
    library = EmbeddingLibrary(folder)
    assert library.names() == [] and library.describe() == []
    assert library.find("EasyNegative, (bad-hands-5:1.2)") == []
    with pytest.raises(EmbeddingError, match=r"in .*none; the folder has none"):
        library.find("embedding:EasyNegative")


def test_load_reads_once_per_width_and_checks_the_width(tmp_path):
    library = _library(tmp_path)
    first = library.load("EASYNEGATIVE", width=768)
    assert first.name == "EasyNegative" and first.vectors.shape == (8, 768)
    assert library.load("easynegative", width=768) is first
    with pytest.raises(EmbeddingError, match=r"EasyNegative\.safetensors has vectors 768 wide"):
        library.load("EasyNegative", width=1024)


def test_describe_reports_each_file_and_never_raises(tmp_path):
    folder = tmp_path / "embeddings"
    folder.mkdir()
    good = _a1111_pt(folder / "good.pt", _vectors(3))
    broken = folder / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    rows = EmbeddingLibrary(folder).describe()
    assert rows[1] == {
        "name": "good",
        "path": str(good),
        "vectors": 3,
        "width": 768,
        "sha256": _sha256(good),
        "error": None,
    }
    assert rows[0]["name"] == "broken" and rows[0]["path"] == str(broken)
    assert str(broken) in rows[0]["error"]
    assert [rows[0][key] for key in ("vectors", "width", "sha256")] == [None, None, None]


def test_the_default_folder_follows_the_store(tmp_path, monkeypatch):
    monkeypatch.setenv("SDGEN_HOME", str(tmp_path / "home-a"))
    assert default_embeddings_dir() == tmp_path / "home-a" / "embeddings"
    assert EmbeddingLibrary().folder == tmp_path / "home-a" / "embeddings"
    monkeypatch.delenv("SDGEN_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_embeddings_dir() == tmp_path / "xdg" / "sdgen" / "embeddings"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert default_embeddings_dir() == Path.home() / ".local" / "share" / "sdgen" / "embeddings"


def test_the_module_imports_neither_tensorflow_nor_torch():
    code = (
        "import sys, sdgen.adapters.textual_inversion; "
        "print(sorted({'tensorflow', 'torch', 'keras'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
