"""LoRA files: every format read and its change computed as the formulas say (written
again here in NumPy), every refusal one LoraError naming the file, the folder library, and
the TensorFlow runtime merging a set of changes and restoring the weights bit for bit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
import torch

from sdgen import convert
from sdgen.adapters.lora import (
    LoraError,
    LoraLibrary,
    apply_deltas_to_keras,
    default_loras_dir,
    lora_deltas,
    read_lora,
)
from sdgen.errors import UsageError

RANK = 4
#: Modules of the tiny model (SD 1.x's layout at tiny widths), kohya-named: diffusers and
#: LDM block names, a text-encoder projection, a 1x1 convolution and 3x3 ones (LoCon).
TE_Q = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
UNET_Q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
LDM_OUT = "lora_unet_output_blocks_3_1_transformer_blocks_0_attn2_to_out_0"
LDM_PROJ_IN = "lora_unet_input_blocks_1_1_proj_in"
LOCON = "lora_unet_down_blocks_0_resnets_0_conv1"
LOCON_MID = "lora_unet_input_blocks_1_0_out_layers_3"  # down_blocks.0.resnets.0.conv2


def key_of(module: str) -> str:
    """The checkpoint key of a kohya module of the tiny model, found here by trying both
    layouts' spellings (the test's own lookup, not sdgen's tables)."""
    for layout in ("diffusers", "ldm"):
        for key in convert.name_index(layout, "tiny"):
            prefix = "lora_te_" if module.startswith("lora_te_") else "lora_unet_"
            for strip in ("text_encoder.", "unet.", "model.diffusion_model."):
                if key.startswith(strip) and key.endswith(".weight"):
                    name = prefix + key[len(strip) : -len(".weight")].replace(".", "_")
                    if name == module:
                        return key
    raise AssertionError(module)


def slot_of(module_or_key: str):
    key = module_or_key if "." in module_or_key else key_of(module_or_key)
    layout = "diffusers" if key.startswith(("unet.", "text_encoder.")) else "ldm"
    (slot,) = convert.name_index(layout, "tiny")[key]
    return slot


def torch_shape(slot) -> tuple[int, ...]:
    shape = slot.param.shape
    return (shape[1], shape[0]) if len(shape) == 2 else (shape[3], shape[2], shape[0], shape[1])


def kohya_tensors(seed=0, alpha=2.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    tensors = {}
    for module in (TE_Q, UNET_Q, LDM_OUT, LDM_PROJ_IN, LOCON, LOCON_MID):
        out, inp, *kernel = torch_shape(slot_of(module))
        if module == LOCON_MID:
            tensors[f"{module}.lora_down.weight"] = rng.standard_normal((RANK, inp, 1, 1))
            tensors[f"{module}.lora_mid.weight"] = rng.standard_normal((RANK, RANK, *kernel))
        else:
            tensors[f"{module}.lora_down.weight"] = rng.standard_normal((RANK, inp, *kernel))
        ones = (1, 1) if kernel else ()
        tensors[f"{module}.lora_up.weight"] = rng.standard_normal((out, RANK, *ones))
        tensors[f"{module}.alpha"] = np.array(alpha)
    return {key: value.astype(np.float32) for key, value in tensors.items()}


def save(path: Path, tensors, metadata=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    safetensors.numpy.save_file(
        {k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata=metadata
    )
    return path


def expected_keras(slot, delta_torch: np.ndarray) -> np.ndarray:
    """A torch-layout change in the keras layout, as the test knows it: dense (out, in) ->
    (in, out), conv OIHW -> HWIO."""
    delta = delta_torch.reshape(torch_shape(slot))
    return delta.T if delta.ndim == 2 else delta.transpose(2, 3, 1, 0)


def kohya_expected(tensors, module, multiplier=1.0) -> np.ndarray:
    down = tensors[f"{module}.lora_down.weight"].astype(np.float64)
    up = tensors[f"{module}.lora_up.weight"].astype(np.float64)
    scale = float(tensors[f"{module}.alpha"]) / down.shape[0]
    up2 = up.reshape(up.shape[0], -1)
    if f"{module}.lora_mid.weight" in tensors:
        mid = tensors[f"{module}.lora_mid.weight"].astype(np.float64)
        delta = np.zeros((up.shape[0], down.shape[1], *mid.shape[2:]))
        for o in range(up.shape[0]):  # the CP sum, spelled out
            for a in range(mid.shape[0]):
                for b in range(mid.shape[1]):
                    delta[o] += up2[o, a] * mid[a, b][None] * down[b, :, 0, 0][:, None, None]
    else:
        delta = up2 @ down.reshape(down.shape[0], -1)
    return expected_keras(slot_of(module), multiplier * scale * delta)


# -- reading ---------------------------------------------------------------------------


def test_a_kohya_locon_file_is_read_with_what_it_says_about_itself(tmp_path):
    tensors = kohya_tensors()
    metadata = {"ss_network_module": "networks.lora", "ss_network_dim": "4"}
    path = save(tmp_path / "My Style.safetensors", tensors, metadata)
    lora = read_lora(path)
    assert lora.name == "My Style" and lora.path == path
    assert lora.format == "locon" and lora.rank == 4 and lora.family is None
    assert lora.metadata == metadata
    import hashlib

    assert lora.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert lora.shorthash == lora.sha256[:12]
    assert {m.name for m in lora.modules} == {k.split(".")[0] for k in tensors}


def test_kohya_deltas_are_the_formula_in_keras_layout_with_both_multipliers(tmp_path):
    tensors = kohya_tensors()
    lora = read_lora(save(tmp_path / "a.safetensors", tensors))
    deltas = lora_deltas([(lora, 0.5, 1.5)], "tiny")
    modules = [k.split(".")[0] for k in tensors if k.endswith("alpha")]
    assert set(deltas) == {(slot_of(m).role, slot_of(m).position) for m in modules}
    for module in modules:
        slot = slot_of(module)
        multiplier = 0.5 if slot.role == "text_encoder" else 1.5
        got = deltas[slot.role, slot.position]
        assert got.dtype == np.float32 and got.shape == slot.param.shape
        np.testing.assert_allclose(got, kohya_expected(tensors, module, multiplier), atol=1e-5)
    assert np.abs(deltas[slot_of(LOCON_MID).role, slot_of(LOCON_MID).position]).max() > 0.1


def test_two_loras_sum_and_a_zero_multiplier_adds_nothing(tmp_path):
    a = read_lora(save(tmp_path / "a.safetensors", kohya_tensors(1)))
    b = read_lora(save(tmp_path / "b.safetensors", kohya_tensors(2, alpha=4.0)))
    one, two = lora_deltas([(a, 1, 1)], "tiny"), lora_deltas([(b, 1, 0.25)], "tiny")
    both = lora_deltas([(a, 1, 1), (b, 1, 0.25)], "tiny")
    for place in both:
        np.testing.assert_allclose(both[place], one[place] + two[place], atol=1e-6)
    no_unet = lora_deltas([(a, 1.0, 0.0)], "tiny")
    assert {role for role, _ in no_unet} == {"text_encoder"}
    assert lora_deltas([(a, 0, 0)], "tiny") == {}


def test_a_kohya_file_without_alpha_has_scale_one(tmp_path):
    tensors = {k: v for k, v in kohya_tensors().items() if not k.endswith("alpha")}
    lora = read_lora(save(tmp_path / "a.safetensors", tensors))
    slot = slot_of(UNET_Q)
    down, up = tensors[f"{UNET_Q}.lora_down.weight"], tensors[f"{UNET_Q}.lora_up.weight"]
    got = lora_deltas([(lora, 1, 1)], "tiny")[slot.role, slot.position]
    np.testing.assert_allclose(got, (up @ down).T, atol=1e-5)


def peft_tensors(seed=0, processor=False):
    rng = np.random.default_rng(seed)
    base = "unet.down_blocks.1.attentions.1.transformer_blocks.0.attn2"
    keys = {
        "text_encoder.text_model.encoder.layers.1.mlp.fc2": "A/B",
        f"{base}.to_k": "A/B",
        "unet.up_blocks.1.resnets.2.conv2": "A/B",
        f"{base}.to_out.0": "proc" if processor else "A/B",
    }
    tensors = {}
    for module in keys:
        slot = slot_of(module + ".weight")
        out, inp, *kernel = torch_shape(slot)
        down = rng.standard_normal((RANK, inp, *kernel)).astype(np.float32)
        up = rng.standard_normal((out, RANK, *((1, 1) if kernel else ()))).astype(np.float32)
        if keys[module] == "proc":
            tensors[f"{base}.processor.to_out_lora.down.weight"] = down
            tensors[f"{base}.processor.to_out_lora.up.weight"] = up
        else:
            tensors[f"{module}.lora_A.weight"] = down
            tensors[f"{module}.lora_B.weight"] = up
    return tensors


def test_peft_files_use_lora_alpha_from_diffusers_metadata_else_scale_one(tmp_path):
    tensors = peft_tensors(processor=True)
    config = {"unet.lora_alpha": 8, "unet.r": 4, "text_encoder.lora_alpha": 2, "text_encoder.r": 4}
    config["unet.alpha_pattern"] = {"conv2": 1}
    metadata = {"lora_adapter_metadata": json.dumps(config)}
    lora = read_lora(save(tmp_path / "p.safetensors", tensors, metadata))
    plain = read_lora(save(tmp_path / "q.safetensors", tensors))
    assert lora.format == plain.format == "peft" and lora.rank == RANK
    deltas, unscaled = lora_deltas([(lora, 1, 1)], "tiny"), lora_deltas([(plain, 1, 1)], "tiny")
    scales = {
        "text_encoder.text_model.encoder.layers.1.mlp.fc2": 2 / RANK,
        "unet.down_blocks.1.attentions.1.transformer_blocks.0.attn2.to_k": 8 / RANK,
        "unet.up_blocks.1.resnets.2.conv2": 1 / RANK,
        "unet.down_blocks.1.attentions.1.transformer_blocks.0.attn2.to_out.0": 8 / RANK,
    }
    assert len(deltas) == len(scales)
    for module, scale in scales.items():
        slot = slot_of(module + ".weight")
        if module.endswith("to_out.0"):  # the older attention-processor names
            base = module.removesuffix(".to_out.0") + ".processor.to_out_lora"
            down, up = tensors[f"{base}.down.weight"], tensors[f"{base}.up.weight"]
        else:
            down, up = tensors[f"{module}.lora_A.weight"], tensors[f"{module}.lora_B.weight"]
        delta = up.reshape(up.shape[0], -1) @ down.reshape(RANK, -1)
        expected = expected_keras(slot, delta)
        np.testing.assert_allclose(unscaled[slot.role, slot.position], expected, atol=1e-5)
        np.testing.assert_allclose(deltas[slot.role, slot.position], scale * expected, atol=1e-5)


def loha_tensors(tucker: bool, seed=0):
    rng = np.random.default_rng(seed)
    module, dim = LOCON, 3
    out, inp, kh, kw = torch_shape(slot_of(module))
    r = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    if tucker:
        parts = {"hada_t1": r(dim, dim, kh, kw), "hada_t2": r(dim, dim, kh, kw)}
        parts |= {"hada_w1_a": r(dim, out), "hada_w1_b": r(dim, inp)}
        parts |= {"hada_w2_a": r(dim, out), "hada_w2_b": r(dim, inp)}
    else:
        parts = {"hada_w1_a": r(out, dim), "hada_w1_b": r(dim, inp * kh * kw)}
        parts |= {"hada_w2_a": r(out, dim), "hada_w2_b": r(dim, inp * kh * kw)}
    parts["alpha"] = np.array(1.5, np.float32)
    return module, {f"{module}.{k}": v for k, v in parts.items()}


@pytest.mark.parametrize("tucker", [False, True], ids=["plain", "tucker"])
def test_loha_is_the_hadamard_product_scaled_by_alpha_over_dim(tmp_path, tucker):
    module, tensors = loha_tensors(tucker)
    lora = read_lora(save(tmp_path / "h.safetensors", tensors))
    assert lora.format == "loha" and lora.rank == 3
    t = {k.split(".", 1)[1]: v.astype(np.float64) for k, v in tensors.items()}
    slot = slot_of(module)
    out, inp, kh, kw = torch_shape(slot)
    if tucker:  # W[p, q, h, w] = sum_ij t[i, j, h, w] a[i, p] b[j, q]
        w1 = np.tensordot(
            np.tensordot(t["hada_t1"], t["hada_w1_a"], ([0], [0])), t["hada_w1_b"], ([0], [0])
        )
        w2 = np.tensordot(
            np.tensordot(t["hada_t2"], t["hada_w2_a"], ([0], [0])), t["hada_w2_b"], ([0], [0])
        )
        w1, w2 = w1.transpose(2, 3, 0, 1), w2.transpose(2, 3, 0, 1)
    else:
        w1 = (t["hada_w1_a"] @ t["hada_w1_b"]).reshape(out, inp, kh, kw)
        w2 = (t["hada_w2_a"] @ t["hada_w2_b"]).reshape(out, inp, kh, kw)
    expected = expected_keras(slot, w1 * w2 * 1.5 / 3 * 0.7)
    got = lora_deltas([(lora, 1, 0.7)], "tiny")[slot.role, slot.position]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("factorised", [False, True], ids=["whole", "factorised"])
def test_lokr_is_the_kronecker_product(tmp_path, factorised):
    rng = np.random.default_rng(3)
    module = UNET_Q  # a 32 x 32 linear weight: kron of 4x8 and 8x4
    r = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    w1 = r(4, 8)
    parts = {"lokr_w1": w1, "alpha": np.array(6.0, np.float32)}
    if factorised:
        parts |= {"lokr_w2_a": r(8, 2), "lokr_w2_b": r(2, 4)}
        w2 = parts["lokr_w2_a"] @ parts["lokr_w2_b"]
    else:
        parts["lokr_w2"] = w2 = r(8, 4)
    lora = read_lora(
        save(tmp_path / "k.safetensors", {f"{module}.{k}": v for k, v in parts.items()})
    )
    assert lora.format == "lokr" and lora.rank == (2 if factorised else None)
    kron = np.zeros((32, 32))
    for i in range(4):  # the Kronecker product, block by block
        for j in range(8):
            kron[i * 8 : (i + 1) * 8, j * 4 : (j + 1) * 4] = w1[i, j] * w2
    scale = 6.0 / 2 if factorised else 1.0  # alpha/dim only when factorised
    slot = slot_of(module)
    got = lora_deltas([(lora, 1, 1)], "tiny")[slot.role, slot.position]
    np.testing.assert_allclose(got, expected_keras(slot, scale * kron), rtol=1e-5, atol=1e-5)


def test_a_pt_file_reads_as_its_safetensors_twin(tmp_path):
    tensors = kohya_tensors()
    torch.save({k: torch.from_numpy(v) for k, v in tensors.items()}, tmp_path / "a.pt")
    from_pt = lora_deltas([(read_lora(tmp_path / "a.pt"), 1, 1)], "tiny")
    from_st = lora_deltas([(read_lora(save(tmp_path / "a.safetensors", tensors)), 1, 1)], "tiny")
    assert from_pt.keys() == from_st.keys()
    assert all(np.array_equal(from_pt[k], from_st[k]) for k in from_pt)


def test_family_comes_from_shapes_then_metadata(tmp_path):
    rng = np.random.default_rng(0)

    def lora(module, inp, metadata=None):
        tensors = {f"{module}.lora_down.weight": rng.standard_normal((2, inp)).astype(np.float32)}
        tensors[f"{module}.lora_up.weight"] = np.zeros((320, 2), np.float32)
        return read_lora(save(tmp_path / f"{module}{inp}.safetensors", tensors, metadata))

    to_k = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    assert lora(to_k, 768).family == "sd-v1"
    assert lora(to_k, 1024).family == "sd-v2"
    assert lora("lora_te_text_model_encoder_layers_20_mlp_fc2", 4096).family == "sd-v2"
    to_q = "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q"
    assert lora(to_q, 1280, {"ss_v2": "True"}).family == "sd-v2"
    assert lora(to_q, 1280).family is None
    assert lora(to_q, 1280, {"ss_base_model_version": "sd_v1"}).family == "sd-v1"


# -- refusals ----------------------------------------------------------------------------


def refused(path, match: str) -> LoraError:
    with pytest.raises(LoraError) as error:
        read_lora(path)
    message = str(error.value)
    assert str(path) in message and "\n" not in message, message
    assert match in message, message
    assert isinstance(error.value, UsageError) and error.value.exit_code == 2
    return error.value


def test_nan_is_refused(tmp_path):
    tensors = kohya_tensors()
    tensors[f"{UNET_Q}.lora_up.weight"][0, 0] = np.nan
    refused(save(tmp_path / "nan.safetensors", tensors), "NaN")
    tensors[f"{UNET_Q}.lora_up.weight"][0, 0] = np.inf
    refused(save(tmp_path / "inf.safetensors", tensors), "infinite")


def test_sdxl_is_refused_by_its_keys_or_its_metadata(tmp_path):
    tensors = kohya_tensors()
    sdxl = {k.replace("lora_te_", "lora_te1_"): v for k, v in tensors.items()}
    refused(save(tmp_path / "xl.safetensors", sdxl), "SDXL")
    metadata = {"ss_base_model_version": "sdxl_base_v1-0"}
    refused(save(tmp_path / "xl2.safetensors", tensors, metadata), "SDXL")
    metadata = {"ss_base_model_version": "flux1"}
    refused(save(tmp_path / "flux.safetensors", tensors, metadata), "another model family")


def test_unknown_module_names_are_refused_naming_the_first_keys(tmp_path):
    tensors = kohya_tensors()
    tensors["lora_unet_down_blocks_9_attentions_0_proj_in.lora_down.weight"] = np.ones(
        (4, 32), np.float32
    )
    tensors["lora_unet_made_up.alpha"] = np.array(1.0, np.float32)
    error = refused(save(tmp_path / "odd.safetensors", tensors), "match no SD 1.x/2.x module")
    assert "lora_unet_down_blocks_9_attentions_0_proj_in.lora_down.weight" in str(error)
    assert "lora_unet_made_up.alpha" in str(error)
    tensors = kohya_tensors()
    tensors[f"{UNET_Q}.lora_side.weight"] = np.ones((4, 4), np.float32)  # unknown part
    refused(save(tmp_path / "part.safetensors", tensors), f"{UNET_Q}.lora_side.weight")


def test_a_file_that_is_no_lora_is_refused(tmp_path):
    checkpoint = {"model.diffusion_model.input_blocks.0.0.weight": np.ones((4, 4), np.float32)}
    refused(save(tmp_path / "model.safetensors", checkpoint), "is not a LoRA")
    (tmp_path / "noise.safetensors").write_bytes(os.urandom(256))
    refused(tmp_path / "noise.safetensors", "could not read")
    (tmp_path / "noise.pt").write_bytes(os.urandom(256))
    refused(tmp_path / "noise.pt", "noise.pt")
    (tmp_path / "a.txt").write_text("hi")
    refused(tmp_path / "a.txt", "is not a")
    refused(tmp_path / "missing.safetensors", "does not exist")


def test_dora_and_incomplete_modules_are_refused(tmp_path):
    tensors = kohya_tensors()
    tensors[f"{UNET_Q}.dora_scale"] = np.ones((1, 32), np.float32)
    refused(save(tmp_path / "dora.safetensors", tensors), "DoRA")
    tensors = kohya_tensors()
    del tensors[f"{UNET_Q}.lora_up.weight"]
    refused(save(tmp_path / "half.safetensors", tensors), "lacks up")
    tensors = kohya_tensors()
    tensors[f"{UNET_Q}.lora_up.weight"] = np.ones((32, 3), np.float32)
    refused(save(tmp_path / "misfit.safetensors", tensors), "does not fit")


class _System:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def test_a_pickle_that_runs_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    tensors = {k: torch.from_numpy(v) for k, v in kohya_tensors().items()}
    torch.save({**tensors, "payload": _System(marker)}, path)
    refused(path, "refusing to load")
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the payload is real: a plain unpickler runs it
    assert marker.exists()


def test_a_lora_for_another_size_or_family_is_refused_when_its_deltas_are_made(tmp_path):
    rng = np.random.default_rng(0)
    module = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    tensors = {f"{module}.lora_down.weight": rng.standard_normal((2, 768)).astype(np.float32)}
    tensors[f"{module}.lora_up.weight"] = np.ones((320, 2), np.float32)
    lora = read_lora(save(tmp_path / "sd15.safetensors", tensors))
    assert lora_deltas([(lora, 1, 1)], "sd-v1")  # fits SD 1.x
    for family in ("tiny", "sd-v2"):
        with pytest.raises(LoraError, match="another model family or size") as error:
            lora_deltas([(lora, 1, 1)], family)
        assert str(lora.path) in str(error.value) and "(it says sd-v1)" in str(error.value)
    deep = "lora_te_text_model_encoder_layers_5_mlp_fc1"  # the tiny text encoder has 2 layers
    tensors = {f"{deep}.lora_down.weight": np.ones((2, 64), np.float32)}
    tensors[f"{deep}.lora_up.weight"] = np.ones((256, 2), np.float32)
    with pytest.raises(LoraError, match="has no lora_te_text_model_encoder_layers_5_mlp_fc1"):
        lora_deltas([(read_lora(save(tmp_path / "deep.safetensors", tensors)), 1, 1)], "tiny")


# -- the library ---------------------------------------------------------------------------


def test_the_library_finds_names_in_any_case_and_subfolders_and_says_where_it_looked(tmp_path):
    folder = tmp_path / "loras"
    save(folder / "Style.safetensors", kohya_tensors())
    save(folder / "chars" / "hero.safetensors", kohya_tensors(1))
    torch.save({k: torch.from_numpy(v) for k, v in kohya_tensors(2).items()}, folder / "old.pt")
    (folder / "broken.safetensors").write_bytes(b"not a file")
    library = LoraLibrary(folder)
    assert library.names() == ["broken", "hero", "old", "Style"]
    assert library.resolve("style") == folder / "Style.safetensors"
    assert library.resolve("HERO") == folder / "chars" / "hero.safetensors"
    assert library.resolve("old.pt") == folder / "old.pt"
    assert library.resolve("chars/hero") == folder / "chars" / "hero.safetensors"
    elsewhere = save(tmp_path / "else.safetensors", kohya_tensors(3))
    assert library.resolve(str(elsewhere)) == elsewhere
    with pytest.raises(LoraError) as error:
        library.resolve("nothing")
    message = str(error.value)
    assert "nothing" in message and str(folder) in message
    assert all(suffix in message for suffix in (".safetensors", ".pt", ".ckpt", ".bin"))
    rows = {row["name"]: row for row in library.describe()}
    assert rows["broken"]["error"] and rows["broken"]["format"] is None
    assert rows["hero"]["format"] == "locon" and rows["hero"]["rank"] == RANK
    assert rows["hero"]["error"] is None and rows["hero"]["path"].endswith("hero.safetensors")


def test_the_library_reads_a_file_once_until_it_changes(tmp_path):
    folder = tmp_path / "loras"
    path = save(folder / "a.safetensors", kohya_tensors())
    library = LoraLibrary(folder)
    first = library.load("a")
    assert library.load("A") is first and library.load(path) is first
    save(path, kohya_tensors(5, alpha=1.0))
    os.utime(path, ns=(first_ns := path.stat().st_mtime_ns + 10**9, first_ns))
    again = library.load("a")
    assert again is not first and again.sha256 != first.sha256


def test_the_default_folder_is_under_sdgen_home(tmp_path, monkeypatch):
    monkeypatch.setenv("SDGEN_HOME", str(tmp_path / "h"))
    assert default_loras_dir() == tmp_path / "h" / "loras"
    assert LoraLibrary().folder == tmp_path / "h" / "loras"
    monkeypatch.delenv("SDGEN_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_loras_dir() == tmp_path / "xdg" / "sdgen" / "loras"


def test_the_package_imports_neither_tensorflow_nor_torch():
    code = (
        "import sys, sdgen.adapters.lora; "
        "print(sorted({'tensorflow', 'torch', 'keras'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


# -- merging into the TensorFlow runtime ---------------------------------------------------


class _Variable:
    def __init__(self, value):
        self.value = np.array(value, np.float32)
        self.shape = self.value.shape

    def numpy(self):
        return self.value.copy()

    def assign(self, value):
        self.value = np.array(value, np.float32)


class _Network:
    def __init__(self, *shapes, seed=0):
        rng = np.random.default_rng(seed)
        self.weights = [_Variable(rng.standard_normal(shape)) for shape in shapes]


def test_apply_restores_what_it_touched_and_keeps_copies_of_only_those():
    networks = {"text_encoder": _Network((3, 3), (3,)), "diffusion_model": _Network((2, 2), (5,))}
    base = {r: [w.numpy() for w in n.weights] for r, n in networks.items()}
    pristine = {}
    first = {
        ("text_encoder", 0): np.full((3, 3), 0.1, np.float32),
        ("diffusion_model", 1): np.ones(5, np.float32),
    }
    apply_deltas_to_keras(networks, first, pristine)
    assert set(pristine) == set(first)
    np.testing.assert_array_equal(
        networks["text_encoder"].weights[0].value, base["text_encoder"][0] + np.float32(0.1)
    )
    second = {("diffusion_model", 0): np.ones((2, 2), np.float32)}
    apply_deltas_to_keras(networks, second, pristine)
    assert set(pristine) == set(second)
    assert np.array_equal(networks["text_encoder"].weights[0].value, base["text_encoder"][0])
    assert np.array_equal(networks["diffusion_model"].weights[1].value, base["diffusion_model"][1])
    apply_deltas_to_keras(networks, {}, pristine)
    assert pristine == {}
    for role, weights in base.items():
        assert all(
            np.array_equal(w.value, b) for w, b in zip(networks[role].weights, weights, strict=True)
        )
    with pytest.raises(LoraError, match="does not fit"):
        apply_deltas_to_keras(networks, {("text_encoder", 1): np.ones(4, np.float32)}, pristine)


def test_set_weight_deltas_changes_what_the_compiled_networks_compute_and_restores_bit_for_bit(
    tmp_path, tiny_pipeline
):
    from sdgen.families.tiny import TINY
    from sdgen.runtimes.signature import NetworkSignature

    backend = tiny_pipeline.backend
    tokens = (np.arange(77)[None] + 300).astype(np.int32)
    positions = np.arange(77, dtype=np.int32)[None]
    signature = NetworkSignature(128, 128)
    rng = np.random.default_rng(0)
    latents = rng.standard_normal((1, 16, 16, 4)).astype(np.float32)
    t_emb = rng.standard_normal((1, TINY.timestep_embedding_dim)).astype(np.float32)
    context = rng.standard_normal((1, 77, 64)).astype(np.float32)

    def outputs():
        states = backend.encode(tokens, positions)
        return states, backend.networks(signature).denoise(latents, t_emb, context)

    def weights():
        return [
            w.numpy() for w in (*backend.text_encoder.weights, *backend.diffusion_model.weights)
        ]

    before_weights, before = weights(), outputs()
    a = read_lora(save(tmp_path / "a.safetensors", kohya_tensors(1)))
    b = read_lora(save(tmp_path / "b.safetensors", peft_tensors(2)))
    deltas_a, deltas_b = lora_deltas([(a, 1, 1)], "tiny"), lora_deltas([(b, 1, 1)], "tiny")
    try:
        backend.set_weight_deltas(deltas_a)
        with_a = outputs()
        assert np.abs(with_a[0] - before[0]).max() > 1e-3
        assert np.abs(with_a[1] - before[1]).max() > 1e-3
        for (role, position), delta in deltas_a.items():
            network = getattr(backend, role)
            index = (
                position if role == "text_encoder" else len(backend.text_encoder.weights) + position
            )
            assert np.array_equal(network.weights[position].numpy(), before_weights[index] + delta)
        assert set(backend._pristine) == set(deltas_a)  # copies of just those tensors
        backend.set_weight_deltas(deltas_b)
        assert set(backend._pristine) == set(deltas_b)
        with_b = outputs()
        assert np.abs(with_b[1] - with_a[1]).max() > 1e-3
        backend.set_weight_deltas(deltas_a)  # the same set again gives the same bits
        again = outputs()
        assert np.array_equal(again[0], with_a[0]) and np.array_equal(again[1], with_a[1])
    finally:
        backend.set_weight_deltas({})
    after = weights()
    assert all(np.array_equal(x, y) for x, y in zip(after, before_weights, strict=True))
    restored = outputs()
    assert np.array_equal(restored[0], before[0]) and np.array_equal(restored[1], before[1])


def test_dotted_names_without_text_model_or_unet_prefixes_mean_the_same_modules(tmp_path):
    rng = np.random.default_rng(7)
    q = "text_model.encoder.layers.0.self_attn.q_proj"
    to_q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    factors = {
        "q_a": rng.standard_normal((RANK, 64)),
        "q_b": rng.standard_normal((64, RANK)),
        "u_a": rng.standard_normal((RANK, 32)),
        "u_b": rng.standard_normal((32, RANK)),
    }
    factors = {k: v.astype(np.float32) for k, v in factors.items()}

    def deltas(te: str, unet: str, name: str):
        tensors = {
            f"{te}.lora_A.weight": factors["q_a"],
            f"{te}.lora_B.weight": factors["q_b"],
            f"{unet}.lora_A.weight": factors["u_a"],
            f"{unet}.lora_B.weight": factors["u_b"],
        }
        return lora_deltas([(read_lora(save(tmp_path / name, tensors)), 1, 1)], "tiny")

    canonical = deltas(f"text_encoder.{q}", f"unet.{to_q}", "a.safetensors")
    bare = deltas(f"text_encoder.{q.removeprefix('text_model.')}", to_q, "b.safetensors")
    assert len(canonical) == 2 and canonical.keys() == bare.keys()
    assert all(np.array_equal(canonical[k], bare[k]) for k in canonical)


def test_an_sd2_lora_maps_through_the_sd2_tables_at_sd2_widths(tmp_path):
    """SD 2.x: kohya names the 1024-wide, 23-layer text encoder after transformers' CLIP
    too, and the U-Net's proj_in is a linear layer (a 2-D LoRA)."""
    rng = np.random.default_rng(1)
    te = "lora_te_text_model_encoder_layers_22_self_attn_v_proj"
    proj = "lora_unet_down_blocks_0_attentions_0_proj_in"
    to_k = "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_attn2_to_k"
    shapes = {te: (1024, 1024), proj: (320, 320), to_k: (320, 1024)}
    tensors = {}
    for module, (out, inp) in shapes.items():
        tensors[f"{module}.lora_down.weight"] = rng.standard_normal((2, inp)).astype(np.float32)
        tensors[f"{module}.lora_up.weight"] = rng.standard_normal((out, 2)).astype(np.float32)
    lora = read_lora(save(tmp_path / "v2.safetensors", tensors, {"ss_v2": "True"}))
    assert lora.family == "sd-v2" and lora.format == "lora"
    deltas = lora_deltas([(lora, 1, 1)], "sd-v2")
    for module in shapes:
        key = key_of_sd2(module)
        (slot,) = convert.name_index("diffusers", "sd-v2")[key]
        expected = (tensors[f"{module}.lora_up.weight"] @ tensors[f"{module}.lora_down.weight"]).T
        assert slot.param.kind == "dense"
        np.testing.assert_allclose(deltas[slot.role, slot.position], expected, atol=1e-5)
    with pytest.raises(LoraError, match="another model family"):
        lora_deltas([(lora, 1, 1)], "sd-v1")


def key_of_sd2(module: str) -> str:
    names = {
        "lora_te_text_model_encoder_layers_22_self_attn_v_proj": (
            "text_encoder.text_model.encoder.layers.22.self_attn.v_proj.weight"
        ),
        "lora_unet_down_blocks_0_attentions_0_proj_in": (
            "unet.down_blocks.0.attentions.0.proj_in.weight"
        ),
        "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_attn2_to_k": (
            "unet.up_blocks.3.attentions.2.transformer_blocks.0.attn2.to_k.weight"
        ),
    }
    return names[module]


def test_a_checkpoint_in_the_lora_folder_is_refused_from_its_header(tmp_path, monkeypatch):
    import sdgen.convert.readers

    def never(path):
        raise AssertionError("read whole")

    monkeypatch.setattr(sdgen.convert.readers, "_read_safetensors", never)
    checkpoint = {"model.diffusion_model.out.2.weight": np.ones((4, 4), np.float32)}
    refused(save(tmp_path / "model.safetensors", checkpoint), "is not a LoRA")
    sdxl = {"lora_te2_text_model_encoder_layers_0_mlp_fc1.alpha": np.ones((), np.float32)}
    refused(save(tmp_path / "xl.safetensors", sdxl), "SDXL")
