"""The OpenVINO runtime against the TensorFlow one, with the tiny model: the same numbers,
converted files cached and reused without building any Keras network, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import only_line, png_files

from sdgen.config import GenerationConfig
from sdgen.families import FAMILIES, Family
from sdgen.pipeline import load_pipeline
from sdgen.pipeline.guidance import combine
from sdgen.runtimes.signature import NetworkSignature

SIZE = 128
TINY = FAMILIES["tiny"]
SIGNATURE = NetworkSignature(SIZE, SIZE)

# the tests that share the converted networks of the module's cache run in one process
pytestmark = pytest.mark.xdist_group("openvino-cache")


@pytest.fixture(scope="module")
def openvino_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("openvino-cache")


@pytest.fixture
def openvino_pipeline(openvino_cache, monkeypatch):
    monkeypatch.setenv("SDGEN_CACHE", str(openvino_cache))
    return load_pipeline("tiny", width=SIZE, height=SIZE, runtime="openvino")


def inputs(seed=0, text_width=64):
    """U-Net inputs for the tiny model: two rows (its timestep embedding is as wide as its
    first U-Net level)."""
    rng = np.random.default_rng(seed)
    latents = rng.standard_normal((2, SIZE // 8, SIZE // 8, 4)).astype(np.float32)
    t_emb = rng.standard_normal((2, TINY.timestep_embedding_dim)).astype(np.float32)
    contexts = rng.standard_normal((2, 77, text_width)).astype(np.float32)
    return latents, t_emb, contexts


def test_openvino_networks_match_tensorflow_within_1e_3(tiny_pipeline, openvino_pipeline):
    tokens = np.stack([np.arange(77) + 300, np.arange(77) + 1000]).astype(np.int32)
    positions = np.tile(np.arange(77, dtype=np.int32), (2, 1))
    tf_states = tiny_pipeline.backend.encode(tokens, positions)
    ov_states = openvino_pipeline.backend.encode(tokens, positions)
    assert np.abs(tf_states - ov_states).max() <= 1e-3
    assert np.abs(tf_states).max() > 0.1  # not a comparison of zeros

    tf_nets = tiny_pipeline.backend.networks(SIGNATURE)
    ov_nets = openvino_pipeline.backend.networks(SIGNATURE)
    latents, t_emb, contexts = inputs()
    expected = tf_nets.denoise(latents, t_emb, contexts)
    got = ov_nets.denoise(latents, t_emb, contexts)
    assert got.shape == expected.shape == (2, SIZE // 8, SIZE // 8, 4)
    assert np.abs(expected - got).max() <= 1e-3
    guided = combine(*np.split(got, 2), 7.5)
    assert np.abs(combine(*np.split(expected, 2), 7.5) - guided).max() <= 1e-3
    decoded = ov_nets.decode(latents)
    assert decoded.shape == (2, SIZE, SIZE, 3)
    assert np.abs(tf_nets.decode(latents) - decoded).max() <= 1e-3


def test_openvino_text_states_with_clip_skip_and_vectors_match_tensorflow(
    tiny_pipeline, openvino_pipeline, openvino_cache
):
    """The text-states variant (clip skip, textual-inversion vectors) converts, caches
    under its own name, and computes what TensorFlow's does."""
    rng = np.random.default_rng(3)
    tokens = np.stack([np.arange(77) + 300, np.arange(77) + 1000, np.arange(77) + 7]).astype(
        np.int32
    )
    positions = np.tile(np.arange(77, dtype=np.int32), (3, 1))
    vectors = rng.standard_normal((3, 77, 64)).astype(np.float32)
    mask = np.zeros((3, 77), bool)
    mask[1, 3:6] = True
    for clip_skip, inserted in ((2, {}), (1, {"vectors": vectors, "mask": mask})):
        tf_states = tiny_pipeline.backend.encode(tokens, positions, clip_skip, **inserted)
        ov_states = openvino_pipeline.backend.encode(tokens, positions, clip_skip, **inserted)
        assert np.abs(tf_states - ov_states).max() <= 1e-3
    plain = tiny_pipeline.backend.encode(tokens, positions)
    assert np.abs(tf_states - plain)[1].max() > 0.1  # the vectors went in, in row 1 only
    assert np.array_equal(tf_states[[0, 2]], plain[[0, 2]])
    names = {path.name for path in Path(openvino_cache).rglob("text_states-skip*.xml")}
    assert names == {"text_states-skip1.xml", "text_states-skip2.xml"}


def test_openvino_images_match_tensorflow_images(tiny_pipeline, openvino_pipeline):
    config = GenerationConfig(
        prompt="a cat", steps=4, width=SIZE, height=SIZE, seed=5, num_images=2, sampler="euler-a"
    )
    expected = tiny_pipeline.generate(config)
    got = openvino_pipeline.generate(config)
    for a, b in zip(expected, got, strict=True):
        difference = np.abs(a.pixels.astype(int) - b.pixels.astype(int))
        assert difference.max() <= 1  # one level of 255, from float32 rounding order
        assert (difference > 0).mean() < 0.01


def test_converted_networks_are_cached_and_reused_without_keras(
    openvino_pipeline, openvino_cache, monkeypatch
):
    folder = openvino_pipeline.backend.folder
    # the text-states variants another test of this module may have converted aside
    files = sorted(p.name for p in folder.iterdir() if not p.name.startswith("text_states-"))
    assert files == [
        "decoder-128x128.bin",
        "decoder-128x128.xml",
        "diffusion_model-128x128-ctx77-in4.bin",
        "diffusion_model-128x128-ctx77-in4.weights.json",  # where each weight is, for LoRAs
        "diffusion_model-128x128-ctx77-in4.xml",
        "text_encoder.bin",
        "text_encoder.weights.json",
        "text_encoder.xml",
    ]  # and no staging folder left behind

    def refuse(*args):
        raise AssertionError("a Keras network was built although the cache has it")

    monkeypatch.setattr(Family, "build", refuse)
    again = load_pipeline("tiny", width=SIZE, height=SIZE, runtime="openvino")
    assert again.backend.converted == []
    config = GenerationConfig(prompt="a dog", steps=3, width=SIZE, height=SIZE, seed=1)
    first = openvino_pipeline.generate(config)[0].pixels
    assert np.array_equal(first, again.generate(config)[0].pixels)


def _resident_weight_bytes(folder) -> int:
    """Resident bytes of this process's mappings of ``folder``'s converted weights."""
    prefix, total, ours = str(folder.resolve()), 0, False
    with open("/proc/self/smaps", encoding="utf-8", errors="replace") as smaps:
        for line in smaps:
            fields = line.split()
            if not fields[0].endswith(":"):  # a mapping's first line
                ours = len(fields) >= 6 and fields[5].startswith(prefix)
                ours = ours and fields[5].endswith(".bin")
            elif fields[0] == "Rss:" and ours:
                total += int(fields[1]) * 1024
    return total


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
def test_compiled_networks_leave_no_second_copy_of_the_weights_resident(
    openvino_pipeline, monkeypatch
):
    from sdgen.runtimes import openvino

    folder = openvino_pipeline.backend.folder
    assert _resident_weight_bytes(folder) == 0
    # without the release, compiling leaves the files' pages resident beside OpenVINO's
    # own copy, so the check above can fail
    monkeypatch.setattr(openvino, "release_mapped_weights", lambda folder: 0)
    kept = openvino.OpenVinoBackend(openvino_pipeline.spec, folder, load_keras=None)
    assert _resident_weight_bytes(folder) > 0
    monkeypatch.undo()
    assert openvino.release_mapped_weights(folder) > 0
    assert _resident_weight_bytes(folder) == 0
    # and the networks compute what they computed before, bit for bit
    latents, t_emb, contexts = inputs(seed=4)
    before = openvino_pipeline.backend.networks(SIGNATURE)
    after = kept.networks(SIGNATURE)  # compiled (and released) again
    expected = before.denoise(latents, t_emb, contexts)
    assert np.array_equal(after.denoise(latents, t_emb, contexts), expected)
    assert np.array_equal(after.decode(latents), before.decode(latents))


def test_another_size_converts_its_own_networks(openvino_pipeline):
    config = GenerationConfig(prompt="a dog", steps=2, width=192, height=128, seed=1)
    image = openvino_pipeline.generate(config)[0]
    assert image.pixels.shape == (128, 192, 3)
    signature = NetworkSignature(128, 192)
    assert openvino_pipeline.backend.path("diffusion_model", signature).exists()
    assert openvino_pipeline.backend.path("decoder", signature).exists()


def test_new_weights_get_a_new_conversion(tmp_path):
    from sdgen.catalog import get_model_spec
    from sdgen.runtimes.openvino import fingerprint

    spec = get_model_spec("tiny")
    weights = tmp_path / "kcv_decoder.h5"
    weights.write_bytes(b"one")
    first = fingerprint(spec, {"decoder": weights})
    assert fingerprint(spec, {"decoder": weights}) == first
    weights.write_bytes(b"other")
    assert fingerprint(spec, {"decoder": weights}) != first
    assert fingerprint(spec, {}) != first


def test_cli_runs_the_openvino_runtime(run_cli, hermetic):
    result = run_cli(
        "a red bicycle", "--model", "tiny", "--steps", "3", "--runtime", "openvino", "--json"
    )
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["runtime"] == "openvino"
    assert summary["done"] == 1
    assert len(png_files(hermetic / "outputs")) == 1
    assert "converted text_encoder.xml" in result.stderr


def test_runtime_comes_from_the_environment(run_cli, monkeypatch, openvino_pipeline):
    # openvino_pipeline has converted the tiny model into the cache this run reads
    monkeypatch.setenv("SDGEN_RUNTIME", "openvino")
    result = run_cli("a cat", "--model", "tiny", "--steps", "2", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["runtime"] == "openvino"
    assert "converted" not in result.stderr


def test_xla_with_openvino_is_a_usage_error(run_cli, hermetic):
    result = run_cli("a cat", "--model", "tiny", "--runtime", "openvino", "--xla")
    assert result.exit_code == 2
    assert only_line(result.stderr) == (
        "Error: --xla and --mixed-precision apply to the tensorflow runtime only"
    )
    assert not (hermetic / "outputs").exists()


def test_unknown_runtime_is_a_usage_error(run_cli):
    result = run_cli("a cat", "--model", "tiny", "--runtime", "onnx")
    assert result.exit_code == 2
    assert "'onnx' is not one of 'tensorflow', 'openvino'" in result.stderr


def test_missing_openvino_is_one_line_naming_the_extra(run_cli, hermetic, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    result = run_cli("a cat", "--model", "tiny", "--steps", "2", "--runtime", "openvino")
    assert result.exit_code == 2
    assert only_line(result.stderr) == (
        "Error: --runtime openvino needs OpenVINO: in your sdgen clone, "
        ".venv/bin/pip install -e '.[openvino]'"
    )
    assert not (hermetic / "outputs").exists()


def test_a_cached_openvino_run_never_imports_tensorflow(run_cli, hermetic, openvino_pipeline):
    # openvino_pipeline has converted the tiny model into the cache both runs read
    args = ["a cat", "--model", "tiny", "--steps", "2", "--seed", "3", "--runtime", "openvino"]
    first = run_cli(*args, "--out", "first.png", "--quiet")
    assert first.exit_code == 0, first.stderr
    code = (
        "import sys\nfrom sdgen.cli import main\n"
        f"try:\n    main({[*args, '--out', 'again.png', '--quiet']!r})\n"
        "except SystemExit as exit_:\n"
        "    print(exit_.code, 'tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.split() == ["0", "False", "False"], result.stdout + result.stderr
    assert (hermetic / "first.png").read_bytes() == (hermetic / "again.png").read_bytes()


def test_a_change_to_the_converter_code_gets_a_new_conversion(tmp_path, monkeypatch):
    from sdgen.catalog import get_model_spec
    from sdgen.runtimes import openvino, openvino_cache

    sources = openvino_cache._graph_sources()
    assert Path(openvino.__file__).resolve() in sources
    copies = []
    for source in sources:
        copy = tmp_path / source.parent.name / source.name
        copy.parent.mkdir(exist_ok=True)
        copy.write_bytes(source.read_bytes())
        copies.append(copy)
    spec = get_model_spec("tiny")
    first = openvino_cache.fingerprint(spec, {})
    monkeypatch.setattr(openvino_cache, "_graph_sources", lambda: copies)
    assert openvino_cache.fingerprint(spec, {}) == first  # the same code, the same name
    copies[0].write_text(copies[0].read_text() + "\n# changed\n")
    assert openvino_cache.fingerprint(spec, {}) != first


def test_another_context_length_converts_its_own_unet(tiny_pipeline, openvino_pipeline):
    signature = NetworkSignature(SIZE, SIZE, context_length=154)
    ov_nets = openvino_pipeline.backend.networks(signature)
    assert openvino_pipeline.backend.path("diffusion_model", signature).name == (
        "diffusion_model-128x128-ctx154-in4.xml"
    )
    latents, t_emb, contexts = inputs(seed=2)
    contexts = np.concatenate([contexts, contexts[::-1]], axis=1)
    expected = tiny_pipeline.backend.networks(signature).denoise(latents, t_emb, contexts)
    assert np.abs(ov_nets.denoise(latents, t_emb, contexts) - expected).max() <= 1e-3
