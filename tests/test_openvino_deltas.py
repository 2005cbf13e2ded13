"""Weight deltas (LoRA) on the OpenVINO runtime, with the tiny model: the same numbers as
the same deltas added to the Keras weights on TensorFlow, ``{}`` gives back the base
networks bit for bit, a switch converts nothing and writes nothing to the cache."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest

from sdgen.families import FAMILIES
from sdgen.pipeline import load_pipeline
from sdgen.runtimes.openvino import OpenVinoBackend, WeightDeltaError
from sdgen.runtimes.openvino_weights import WeightMap, sidecar
from sdgen.runtimes.signature import NetworkSignature

SIZE = 128
SIGNATURE = NetworkSignature(SIZE, SIZE)
TOLERANCE = 1e-4

# the tests that share the converted networks of the module's cache run in one process
pytestmark = pytest.mark.xdist_group("openvino-deltas")


@pytest.fixture(scope="module")
def openvino_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("openvino-deltas-cache")


@pytest.fixture
def backend(openvino_cache, monkeypatch) -> OpenVinoBackend:
    monkeypatch.setenv("SDGEN_CACHE", str(openvino_cache))
    return load_pipeline("tiny", width=SIZE, height=SIZE, runtime="openvino").backend


def _positions(network, want) -> list[int]:
    """Positions in ``network.weights`` of the first weight matching each test."""
    weights = list(network.weights)
    found = []
    for test in want:
        found.append(next(i for i, w in enumerate(weights) if i not in found and test(i, weights)))
    return found


def _is_kernel(ndim):
    return lambda i, ws: ws[i].path.endswith("kernel") and len(ws[i].shape) == ndim


def _bias_of_conv(i, ws):
    return ws[i].path.endswith("bias") and i > 0 and len(ws[i - 1].shape) == 4


def _attention(i, ws):  # a projection inside a spatial transformer's attention
    return len(ws[i].shape) == 2 and "attention" in ws[i].path


def deltas_for(tf_backend, seed: int) -> dict[tuple[str, int], np.ndarray]:
    """Random deltas on a few weights of each network: for the U-Net a conv kernel, the
    conv's bias, a dense kernel and an attention projection; for the text encoder two
    dense kernels, the query bias (the one OpenVINO scales) and a layer norm scale."""
    rng = np.random.default_rng(seed)
    unet = _positions(
        tf_backend.diffusion_model, [_is_kernel(4), _bias_of_conv, _is_kernel(2), _attention]
    )
    text = tf_backend.text_encoder
    kernels = [i for i, w in enumerate(text.weights) if len(w.shape) == 2 and "dense" in w.path]
    query_bias = kernels[0] + 1  # the first attention's q_proj bias
    gamma = next(i for i, w in enumerate(text.weights) if w.path.endswith("gamma"))
    deltas = {}
    for role, network, positions in (
        ("diffusion_model", tf_backend.diffusion_model, unet),
        ("text_encoder", text, [kernels[0], kernels[-1], query_bias, gamma]),
    ):
        for position in positions:
            shape = tuple(network.weights[position].shape)
            deltas[(role, position)] = (0.05 * rng.standard_normal(shape)).astype(np.float32)
    return deltas


@contextlib.contextmanager
def keras_deltas(tf_backend, deltas):
    """The same deltas added straight to the Keras variables, put back afterwards (the
    TensorFlow pipeline is shared by the session)."""
    networks = {
        "diffusion_model": tf_backend.diffusion_model,
        "text_encoder": tf_backend.text_encoder,
    }
    saved = {}
    for (role, position), delta in deltas.items():
        variable = networks[role].weights[position]
        saved[(role, position)] = np.asarray(variable).copy()
        variable.assign(saved[(role, position)] + delta)
    try:
        yield
    finally:
        for (role, position), value in saved.items():
            networks[role].weights[position].assign(value)


def _tokens():
    tokens = np.stack([np.arange(77) + 300, np.arange(77) + 1000]).astype(np.int32)
    return tokens, np.tile(np.arange(77, dtype=np.int32), (2, 1))


def _unet_inputs(seed=0, text_width=64):
    rng = np.random.default_rng(seed)
    latents = rng.standard_normal((2, SIZE // 8, SIZE // 8, 4)).astype(np.float32)
    t_emb = rng.standard_normal((2, FAMILIES["tiny"].timestep_embedding_dim)).astype(np.float32)
    contexts = rng.standard_normal((2, 77, text_width)).astype(np.float32)
    return latents, t_emb, contexts


def outputs(backend) -> dict[str, np.ndarray]:
    """Text states (plain, clip skip 2, with inserted vectors) and a U-Net prediction."""
    tokens, positions = _tokens()
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((2, 77, 64)).astype(np.float32)
    mask = np.zeros((2, 77), bool)
    mask[1, 2:4] = True
    return {
        "states": backend.encode(tokens, positions),
        "skip2": backend.encode(tokens, positions, 2),
        "vectors": backend.encode(tokens, positions, 1, vectors=vectors, mask=mask),
        "unet": backend.networks(SIGNATURE).denoise(*_unet_inputs()),
    }


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def test_openvino_deltas_match_the_same_deltas_added_to_keras(tiny_pipeline, backend):
    tf_backend = tiny_pipeline.backend
    deltas = deltas_for(tf_backend, seed=1)
    tokens, positions = _tokens()
    # the vectors variant is compiled before the deltas, clip skip 2 only after them
    zeros = np.zeros((2, 77, 64), np.float32)
    backend.encode(tokens, positions, 1, vectors=zeros, mask=np.zeros((2, 77), bool))
    base = outputs(tf_backend)
    before = backend.networks(SIGNATURE).denoise(*_unet_inputs())
    assert np.abs(before - base["unet"]).max() <= TOLERANCE
    converted = list(backend.converted)
    backend.set_weight_deltas(deltas)
    got = outputs(backend)
    with keras_deltas(tf_backend, deltas):
        expected = outputs(tf_backend)
    for name in expected:
        assert np.abs(got[name] - expected[name]).max() <= TOLERANCE, name
        assert np.abs(expected[name] - base[name]).max() > 1e-2, name  # the deltas count
    # a U-Net signature first used after the deltas gets them too
    longer = NetworkSignature(SIZE, SIZE, context_length=154)
    latents, t_emb, contexts = _unet_inputs(seed=5)
    contexts = np.concatenate([contexts, contexts[::-1]], axis=1)
    got = backend.networks(longer).denoise(latents, t_emb, contexts)
    with keras_deltas(tf_backend, deltas):
        expected = tf_backend.networks(longer).denoise(latents, t_emb, contexts)
    assert np.abs(got - expected).max() <= TOLERANCE
    # only what was never compiled before was converted; no base file again
    longer_file = backend.path("diffusion_model", longer).name
    assert backend.converted == [*converted, "text_states-skip2.xml", longer_file]


def test_empty_deltas_give_back_the_base_and_a_switch_equals_a_fresh_load(
    tiny_pipeline, backend, monkeypatch
):
    a = deltas_for(tiny_pipeline.backend, seed=2)
    b = deltas_for(tiny_pipeline.backend, seed=3)
    base = outputs(backend)
    files, converted = _files(backend.folder), list(backend.converted)
    backend.set_weight_deltas(a)
    with_a = outputs(backend)
    backend.set_weight_deltas(b)
    with_b = outputs(backend)
    assert all(np.abs(with_a[n] - with_b[n]).max() > 1e-3 for n in base)
    backend.set_weight_deltas({})
    again = outputs(backend)
    assert all(np.array_equal(again[n], base[n]) for n in base)

    # B alone, on a backend that never saw A, and without any Keras network
    def refuse(*args):
        raise AssertionError("a Keras network was built although the cache has it")

    fresh = OpenVinoBackend(backend.spec, backend.folder, load_keras=refuse)
    fresh.set_weight_deltas(b)
    alone = outputs(fresh)
    assert all(np.array_equal(alone[n], with_b[n]) for n in base)
    assert backend.converted == converted and fresh.converted == []
    assert _files(backend.folder) == files  # nothing merged written, nothing rewritten


def test_bad_deltas_are_refused_before_anything_changes(tiny_pipeline, backend):
    good = deltas_for(tiny_pipeline.backend, seed=4)
    (role, position), delta = next(iter(good.items()))
    base = outputs(backend)
    bad = [
        ({(role, position): delta[..., :1]}, "a delta of shape"),
        ({(role, 10_000): delta}, "no weight 10000"),
        ({("decoder", 0): delta}, "no weight deltas for the 'decoder'"),
    ]
    for deltas, message in bad:
        with pytest.raises(WeightDeltaError, match=message):
            backend.set_weight_deltas({**good, **deltas})
    assert all(np.array_equal(outputs(backend)[n], base[n]) for n in base)


def test_a_folded_weight_is_refused_clearly():
    folded = WeightMap(((4,), (4,)), {}, frozenset({1}))
    with pytest.raises(WeightDeltaError, match="folded the text_encoder's weight 1"):
        folded.check("text_encoder", {1: np.zeros(4, np.float32)})
    folded.check("text_encoder", {0: np.zeros(4, np.float32)})  # unused: changes nothing


def test_weight_maps_are_written_and_a_missing_one_converts_again(backend):
    folder = backend.folder
    for name in ("text_encoder", f"diffusion_model-{SIGNATURE.file_stem()}"):
        weight_map = WeightMap.load(sidecar(folder / f"{name}.xml"))
        assert len(weight_map.placements) == len(weight_map.shapes) > 30
        assert not weight_map.unplaced
    assert not sidecar(backend.path("decoder", SIGNATURE)).exists()
    sidecar(folder / "text_encoder.xml").unlink()
    again = OpenVinoBackend(backend.spec, folder, backend._load_keras)
    assert again.converted == ["text_encoder.xml"]
    assert sidecar(folder / "text_encoder.xml").exists()


def test_weights_are_located_through_transposes_and_a_folded_scale():
    """``locate`` on a small OpenVINO graph built by hand: a dense kernel stored
    transposed, a bias stored times a scalar, two equal weights (ambiguous: refused), an
    unused weight, and a used weight folded away; then a delta merged through the map
    computes what NumPy does with the delta added to the Keras-layout weights."""
    import openvino as ov
    import openvino.opset13 as ops

    from sdgen.runtimes.openvino import COMPILE_CONFIG
    from sdgen.runtimes.openvino_weights import locate, patched_model

    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((4, 3)).astype(np.float32)  # Keras (in, out)
    bias = rng.standard_normal(3).astype(np.float32)
    same = rng.standard_normal(3).astype(np.float32)
    folded = rng.standard_normal(3).astype(np.float32)
    variables = [kernel, bias, same, same.copy(), np.ones(2, np.float32), folded]

    def constant(array, name):
        node = ops.constant(np.ascontiguousarray(array))
        node.set_friendly_name(name)
        return node

    x = ops.parameter([1, 4], np.float32, name="x")
    y = ops.matmul(x, constant(kernel.T, "kernel_t"), False, True)
    y = ops.add(y, constant((bias * np.float32(0.25)).reshape(1, 3), "bias_scaled"))
    y = ops.add(ops.add(y, constant(same, "same_a")), constant(same, "same_b"))
    y = ops.add(y, constant(folded * folded, "folded_squared"))
    model = ov.Model([y], [x])

    weight_map = locate(model, variables, used={0, 1, 2, 3, 5})
    assert weight_map.shapes == ((4, 3), (3,), (3,), (3,), (2,), (3,))
    assert [(p.name, p.axes) for p in weight_map.placements[0]] == [("kernel_t", (1, 0))]
    (scaled,) = weight_map.placements[1]
    assert scaled.name == "bias_scaled" and abs(scaled.scale - 0.25) < 1e-6
    assert weight_map.unplaced == {2, 3, 5}
    assert set(weight_map.placements) == {0, 1}  # 4 is unused: in neither

    delta = rng.standard_normal((4, 3)).astype(np.float32)
    bias_delta = rng.standard_normal(3).astype(np.float32)
    patched = patched_model(model, weight_map, {0: delta, 1: bias_delta}, add=True)
    inputs = rng.standard_normal((1, 4)).astype(np.float32)
    got = ov.Core().compile_model(patched, "CPU", COMPILE_CONFIG)(inputs)[0]
    expected = inputs @ (kernel + delta) + 0.25 * (bias + bias_delta) + 2 * same + folded**2
    assert np.abs(got - expected).max() < 1e-5
    before = inputs @ kernel + 0.25 * bias + 2 * same + folded**2
    assert np.abs(got - before).max() > 0.1


def test_a_kohya_lora_file_gives_what_the_tensorflow_runtime_gives(
    tmp_path, tiny_pipeline, backend
):
    """A kohya LoCon file (attention, 1x1 and 3x3 convolutions, a CP mid), read and
    turned into deltas by ``sdgen.adapters.lora``, through each runtime's own
    ``set_weight_deltas``."""
    from test_lora import kohya_tensors, save

    from sdgen.adapters.lora import lora_deltas, read_lora

    lora = read_lora(save(tmp_path / "style.safetensors", kohya_tensors(1)))
    deltas = lora_deltas([(lora, 0.1, 0.2)], "tiny")
    assert {role for role, _ in deltas} == {"text_encoder", "diffusion_model"}
    assert any(delta.ndim == 4 for delta in deltas.values())
    base = outputs(backend)
    tf_backend = tiny_pipeline.backend
    try:
        tf_backend.set_weight_deltas(deltas)
        expected = outputs(tf_backend)
    finally:
        tf_backend.set_weight_deltas({})
    backend.set_weight_deltas(deltas)
    got = outputs(backend)
    for name in expected:
        assert np.abs(got[name] - expected[name]).max() <= TOLERANCE, name
        assert np.abs(got[name] - base[name]).max() > 1e-3, name
