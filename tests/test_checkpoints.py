"""Reading, detecting and mapping Stable Diffusion checkpoints (sdgen.checkpoints).

Everything here is small: readers round-trip little dictionaries, detection and key
resolution work on zero-cost stand-ins (``np.broadcast_to``) of full-size tensors, and
no network is built. The full-size conversion is compared with diffusers in
tests/reference/test_checkpoints_vs_diffusers.py.
"""

from __future__ import annotations

import os
import pickle
import zipfile

import numpy as np
import pytest

from sdgen import checkpoints
from sdgen.checkpoints import (
    CheckpointError,
    NotACheckpointError,
    UnsupportedCheckpointError,
    detect,
    read_checkpoint,
    resolve_keys,
)
from sdgen.errors import UsageError

# -- readers -------------------------------------------------------------------------------


def _small_state():
    rng = np.random.default_rng(0)
    return {
        "model.diffusion_model.a.weight": rng.standard_normal((3, 4)).astype(np.float32),
        "first_stage_model.b.bias": rng.standard_normal(5).astype(np.float16),
    }


def test_safetensors_round_trip(tmp_path):
    from safetensors.numpy import save_file

    state = _small_state()
    save_file(state, str(tmp_path / "m.safetensors"))
    loaded = read_checkpoint(tmp_path / "m.safetensors")
    assert sorted(loaded) == sorted(state)
    for key, value in state.items():
        np.testing.assert_array_equal(loaded[key], value)
        assert loaded[key].dtype == value.dtype


def test_ckpt_round_trip_without_torch_on_the_read_side(tmp_path):
    torch = pytest.importorskip("torch")
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state = {
        "plain": torch.randn(3, 4),
        "half": torch.randn(5).half(),
        "transposed": base.t(),  # non-contiguous: strides (1, 6)
        "offset": base[1:3, 2:5],  # shares base's storage, with an offset
        "bf16": torch.tensor([1.5, -2.25, 3.0], dtype=torch.bfloat16),
        "param": torch.nn.Parameter(torch.ones(2)),
    }
    path = tmp_path / "m.ckpt"
    torch.save({"state_dict": state, "global_step": 10, "epoch": 2}, path)
    loaded = read_checkpoint(path)
    assert sorted(loaded) == sorted(state)
    for key, value in state.items():
        expected = value.detach().float().numpy() if key == "bf16" else value.detach().numpy()
        np.testing.assert_array_equal(loaded[key], expected)
    assert loaded["half"].dtype == np.float16


def _zip_pickle(path, payload: bytes):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", payload)
        archive.writestr("archive/byteorder", "little")


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    _zip_pickle(path, pickle.dumps({"state_dict": {"x": _Evil(marker)}}))
    with pytest.raises(CheckpointError, match=r"system"):
        read_checkpoint(path)
    assert not marker.exists()
    # The payload is real: plain pickle would have run it.
    pickle.loads(pickle.dumps(_Evil(marker)))
    assert marker.exists()


def test_malicious_pickle_saved_by_torch_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "hook": _Evil(marker)}, path)
    with pytest.raises(CheckpointError, match=r"refusing to load"):
        read_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "name",
    [
        ("builtins", "eval"),
        ("builtins", "getattr"),
        ("subprocess", "Popen"),
        ("torch", "load"),
        ("numpy", "load"),
    ],
)
def test_restricted_unpickler_refuses_other_globals(tmp_path, name):
    module, attr = name
    payload = b"\x80\x02c" + f"{module}\n{attr}\n".encode() + b"q\x00."
    path = tmp_path / "m.ckpt"
    _zip_pickle(path, payload)
    with pytest.raises(CheckpointError, match=f"{module}.{attr}"):
        read_checkpoint(path)


def test_missing_file_is_a_usage_error(tmp_path):
    with pytest.raises(NotACheckpointError, match="does not exist") as info:
        read_checkpoint(tmp_path / "nope.safetensors")
    assert isinstance(info.value, UsageError) and info.value.exit_code == 2


def test_unknown_extension_is_not_a_checkpoint(tmp_path):
    (tmp_path / "m.txt").write_text("hello")
    with pytest.raises(NotACheckpointError):
        read_checkpoint(tmp_path / "m.txt")


def test_truncated_safetensors(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "m.safetensors"
    save_file(_small_state(), str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 10])
    with pytest.raises(CheckpointError, match="could not read") as info:
        read_checkpoint(path)
    assert info.value.exit_code == 1


def test_truncated_ckpt(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "m.ckpt"
    torch.save({"state_dict": {"w": torch.randn(1000)}}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        read_checkpoint(path)


def test_not_a_zip_ckpt(tmp_path):
    path = tmp_path / "m.ckpt"
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError, match="not a zip"):
        read_checkpoint(path)


def test_ckpt_without_tensors_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "m.ckpt"
    _zip_pickle(path, pickle.dumps({"a": 1, "b": [1, 2]}))
    with pytest.raises(NotACheckpointError, match="no tensors"):
        read_checkpoint(path)


def test_diffusers_folder_needs_all_components(tmp_path):
    from safetensors.numpy import save_file

    (tmp_path / "unet").mkdir()
    save_file(_small_state(), str(tmp_path / "unet" / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(CheckpointError, match="vae, text_encoder|text_encoder, vae"):
        read_checkpoint(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NotACheckpointError):
        read_checkpoint(empty)


def test_diffusers_folder_keys_are_prefixed(tmp_path):
    from safetensors.numpy import save_file

    for component, names in checkpoints.DIFFUSERS_FILES.items():
        (tmp_path / component).mkdir()
        save_file({"w": np.zeros(2, np.float32)}, str(tmp_path / component / names[0]))
    assert sorted(read_checkpoint(tmp_path)) == [
        "text_encoder.text_model.w",
        "unet.w",
        "vae.w",
    ]


# -- detection -----------------------------------------------------------------------------

CONV_IN = "model.diffusion_model.input_blocks.0.0.weight"
TO_K = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"


def _zeros(shape):
    return np.broadcast_to(np.float16(0), shape)


def _detection_dict(channels=4, context=768):
    return {CONV_IN: _zeros((320, channels, 3, 3)), TO_K: _zeros((320, context))}


def test_detects_sd1_ldm_and_diffusers_layouts():
    assert detect(_detection_dict()) == ("sd-v1", "ldm")
    diffusers = {
        "unet.conv_in.weight": _zeros((320, 4, 3, 3)),
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight": _zeros(
            (320, 768)
        ),
    }
    assert detect(diffusers) == ("sd-v1", "diffusers")


def test_detects_sd2_ldm_and_diffusers_layouts():
    assert detect(_detection_dict(context=1024)) == ("sd-v2", "ldm")
    diffusers = {
        "unet.conv_in.weight": _zeros((320, 4, 3, 3)),
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight": _zeros(
            (320, 1024)
        ),
    }
    assert detect(diffusers) == ("sd-v2", "diffusers")


def test_unknown_context_width_is_named():
    with pytest.raises(UnsupportedCheckpointError, match="context width 512"):
        detect(_detection_dict(context=512))


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        (_detection_dict(channels=9), "inpainting"),
        (_detection_dict(channels=9, context=1024), "inpainting"),
        (_detection_dict(channels=5, context=1024), "5 input channels"),
        ({**_detection_dict(), "conditioner.embedders.0.x": _zeros(1)}, "XL"),
        ({"unet.add_embedding.linear_1.weight": _zeros((2, 2))}, "XL"),
        (
            {
                **_detection_dict(context=1024),
                "model.diffusion_model.label_emb.0.0.weight": _zeros((1280, 2048)),
            },
            "unCLIP",
        ),
        ({"lora_unet_down_blocks_0.lora_up.weight": _zeros((4, 4))}, "LoRA"),
        ({**_detection_dict(), "lora_te_x.lora_down.weight": _zeros(1)}, "LoRA"),
    ],
)
def test_unsupported_kinds_are_named(tensors, message):
    with pytest.raises(UnsupportedCheckpointError, match=message) as info:
        detect(tensors)
    assert info.value.exit_code == 1


def test_anything_else_is_not_a_stable_diffusion_checkpoint():
    with pytest.raises(NotACheckpointError, match="not a Stable Diffusion checkpoint"):
        detect({"encoder.layer.0.weight": _zeros((4, 4))})


# -- key resolution and conversion ---------------------------------------------------------


def _torch_shape(param):
    if param.kind == "dense":
        return param.shape[::-1]
    if param.kind == "conv":
        h, w, n_in, n_out = param.shape
        return (n_out, n_in, h, w)
    return param.shape


def _full_ldm_stand_in(family="sd-v1"):
    """Every tensor of a single file of ``family``, as zero-cost stand-ins."""
    params = [p for make in checkpoints.PARAMS_BY_FAMILY[family].values() for p in make()]
    tensors = {}
    for p in params:
        shape = _torch_shape(p)
        if p.ldm_part is not None:  # OpenCLIP's fused q, k, v
            shape = (shape[0] * p.ldm_part[1], *shape[1:])
        tensors[p.ldm] = _zeros(shape)
    return tensors


def _full_diffusers_stand_in(family="sd-v1"):
    params = [p for make in checkpoints.PARAMS_BY_FAMILY[family].values() for p in make()]
    return {p.diffusers: _zeros(_torch_shape(p)) for p in params}


def test_param_lists_have_keras_cv_sizes():
    counts = {name: len(make()) for name, make in checkpoints.PARAMS.items()}
    assert counts == {"text_encoder": 196, "diffusion_model": 686, "decoder": 140}
    total = sum(int(np.prod(p.shape)) for make in checkpoints.PARAMS.values() for p in make())
    assert total == 123_060_480 + 859_520_964 + 49_490_199


def test_full_key_set_resolves_with_ignored_extras():
    tensors = _full_ldm_stand_in()
    tensors.update(
        {
            "model_ema.decay": _zeros(()),
            "model_ema.diffusion_modelinput_blocks00weight": _zeros((320, 4, 3, 3)),
            "cond_stage_model.transformer.text_model.embeddings.position_ids": _zeros((1, 77)),
            "alphas_cumprod": _zeros(1000),
            "first_stage_model.encoder.conv_in.weight": _zeros((128, 3, 3, 3)),
            "first_stage_model.quant_conv.weight": _zeros((8, 8, 1, 1)),
        }
    )
    assert detect(tensors) == ("sd-v1", "ldm")
    resolved = resolve_keys(tensors, "ldm")
    assert [len(v) for v in resolved.values()] == [196, 686, 140]


def test_missing_key_is_named():
    tensors = _full_ldm_stand_in()
    key = "model.diffusion_model.output_blocks.5.2.conv.weight"
    del tensors[key]
    with pytest.raises(CheckpointError, match=key.replace(".", r"\.")):
        resolve_keys(tensors, "ldm")


def test_left_over_key_is_named():
    tensors = _full_ldm_stand_in()
    tensors["model.diffusion_model.extra.weight"] = _zeros(3)
    with pytest.raises(CheckpointError, match=r"model\.diffusion_model\.extra\.weight"):
        resolve_keys(tensors, "ldm")


def test_wrong_shape_is_named():
    tensors = _full_ldm_stand_in()
    key = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
    tensors[key] = np.zeros((49408, 1024), np.float16)
    with pytest.raises(CheckpointError, match=r"token_embedding\.weight has shape"):
        checkpoints.map_weights(tensors, "ldm")


def test_layout_transforms():
    dense = checkpoints.Param("a", "a", (3, 2), "dense")
    weight = np.arange(6, dtype=np.float16).reshape(2, 3)
    out = checkpoints._to_keras("a", weight, dense)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, weight.T)

    conv = checkpoints.Param("c", "c", (3, 3, 2, 5), "conv")
    kernel = np.random.default_rng(0).standard_normal((5, 2, 3, 3)).astype(np.float32)
    out = checkpoints._to_keras("c", kernel, conv)
    assert out[1, 2, 0, 4] == kernel[4, 0, 1, 2]

    one_by_one = checkpoints.Param("q", "q", (1, 1, 2, 5), "conv")
    linear = np.arange(10, dtype=np.float32).reshape(5, 2)
    out = checkpoints._to_keras("q", linear, one_by_one)
    np.testing.assert_array_equal(out[0, 0], linear.T)
    out = checkpoints._to_keras("q", linear[:, :, None, None], one_by_one)
    np.testing.assert_array_equal(out[0, 0], linear.T)


def test_integer_tensor_is_refused():
    param = checkpoints.Param("a", "a", (2,), "copy")
    with pytest.raises(CheckpointError, match="dtype"):
        checkpoints._to_keras("a", np.zeros(2, np.int64), param)


def _unicode(text: str) -> bytes:
    data = text.encode()
    return b"X" + len(data).to_bytes(4, "little") + data


def test_hand_written_torch_archive_is_rebuilt_from_its_storage(tmp_path):
    """A torch-style archive written opcode by opcode (no torch needed): a transposed
    2x2 view at offset 1 of a 6-float storage, under a ``state_dict`` wrapper."""
    storage_id = (
        b"(" + _unicode("storage") + b"ctorch\nFloatStorage\n"
        + _unicode("0") + _unicode("cpu") + b"K\x06tQ"
    )  # fmt: skip
    tensor = (
        b"ctorch._utils\n_rebuild_tensor_v2\n("
        + storage_id
        + b"K\x01K\x02K\x02\x86K\x01K\x02\x86\x89}tR"
    )
    payload = b"\x80\x02}" + _unicode("state_dict") + b"}" + _unicode("w") + tensor + b"ss."
    path = tmp_path / "m.ckpt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("m/data.pkl", payload)
        archive.writestr("m/data/0", np.arange(6, dtype="<f4").tobytes())
    loaded = read_checkpoint(path)
    np.testing.assert_array_equal(loaded["w"], np.array([[1, 3], [2, 4]], np.float32))


def test_reading_imports_neither_torch_nor_tensorflow(tmp_path):
    import subprocess
    import sys

    test_hand_written_torch_archive_is_rebuilt_from_its_storage(tmp_path)
    code = (
        "import sys\n"
        "from sdgen.checkpoints import read_checkpoint\n"
        f"assert read_checkpoint({str(tmp_path / 'm.ckpt')!r})['w'].shape == (2, 2)\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorflow'))\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_old_clip_naming_and_state_dict_nesting_are_normalised(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "m.ckpt"
    old = "cond_stage_model.transformer.embeddings.token_embedding.weight"
    torch.save({"state_dict": {old: torch.zeros(2, 3)}, "global_step": 1}, path)
    assert list(read_checkpoint(path)) == [
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
    ]


def test_bfloat16_safetensors_are_read_as_float32(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    path = tmp_path / "m.safetensors"
    save_file(
        {
            "a": torch.tensor([[1.5, -2.0], [0.25, 3.0]], dtype=torch.bfloat16),
            "b": torch.tensor([1.0, 2.0], dtype=torch.float16),
        },
        str(path),
    )
    loaded = read_checkpoint(path)
    np.testing.assert_array_equal(loaded["a"], np.array([[1.5, -2.0], [0.25, 3.0]], np.float32))
    np.testing.assert_array_equal(loaded["b"], np.array([1.0, 2.0], np.float16))


def test_save_converted_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="not empty"):
        checkpoints.save_converted({}, tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_diffusers_layout_resolves_with_old_vae_attention_names():
    params = [p for make in checkpoints.PARAMS.values() for p in make()]
    tensors = {}
    for p in params:
        key = p.aliases[0] if p.aliases else p.diffusers
        tensors[key] = _zeros(_torch_shape(p))
    tensors["vae.encoder.conv_in.weight"] = _zeros((128, 3, 3, 3))
    assert any(".query." in k for k in tensors)
    assert detect(tensors) == ("sd-v1", "diffusers")
    resolved = resolve_keys(tensors, "diffusers")
    assert [len(v) for v in resolved.values()] == [196, 686, 140]


# -- SD 2.x --------------------------------------------------------------------------------

SD2_COUNTS = [372, 686, 140]


def test_sd2_param_lists_have_keras_cv_sizes():
    families = checkpoints.PARAMS_BY_FAMILY
    counts = [len(make()) for make in families["sd-v2"].values()]
    assert counts == SD2_COUNTS
    totals = [sum(int(np.prod(p.shape)) for p in make()) for make in families["sd-v2"].values()]
    # TextEncoderV2(77).count_params(), DiffusionModelV2(64, 64, 77).count_params(),
    # Decoder(64, 64).count_params()
    assert totals == [340_387_840, 865_910_724, 49_490_199]


def _sd2_single_file_extras():
    extras = {
        f"cond_stage_model.model.transformer.resblocks.23.{name}": _zeros(shape)
        for name, shape in (
            ("ln_1.weight", (1024,)),
            ("ln_1.bias", (1024,)),
            ("attn.in_proj_weight", (3072, 1024)),
            ("attn.in_proj_bias", (3072,)),
            ("attn.out_proj.weight", (1024, 1024)),
            ("attn.out_proj.bias", (1024,)),
            ("ln_2.weight", (1024,)),
            ("ln_2.bias", (1024,)),
            ("mlp.c_fc.weight", (4096, 1024)),
            ("mlp.c_fc.bias", (4096,)),
            ("mlp.c_proj.weight", (1024, 4096)),
            ("mlp.c_proj.bias", (1024,)),
        )
    }
    extras.update(
        {
            "cond_stage_model.model.text_projection": _zeros((1024, 1024)),
            "cond_stage_model.model.logit_scale": _zeros(()),
            "model_ema.decay": _zeros(()),
            "alphas_cumprod": _zeros(1000),
            "first_stage_model.encoder.conv_in.weight": _zeros((128, 3, 3, 3)),
            "first_stage_model.quant_conv.weight": _zeros((8, 8, 1, 1)),
        }
    )
    return extras


def test_full_sd2_single_file_key_set_resolves_with_every_key_used_or_ignored():
    tensors = _full_ldm_stand_in("sd-v2")
    # The real OpenCLIP names and shapes of a few tensors.
    block = "cond_stage_model.model.transformer.resblocks.22."
    assert tensors[block + "attn.in_proj_weight"].shape == (3072, 1024)
    assert tensors[block + "attn.in_proj_bias"].shape == (3072,)
    assert tensors["cond_stage_model.model.positional_embedding"].shape == (77, 1024)
    proj_in = "model.diffusion_model.input_blocks.1.1.proj_in.weight"
    assert tensors[proj_in].shape == (320, 320)  # linear, not a 1x1 convolution
    assert not any("resblocks.23." in k for k in tensors)
    tensors.update(_sd2_single_file_extras())
    assert detect(tensors) == ("sd-v2", "ldm")
    resolved = resolve_keys(tensors, "ldm", "sd-v2")
    assert [len(v) for v in resolved.values()] == SD2_COUNTS
    used = {key for keys in resolved.values() for key, _ in keys}
    ignored = set(tensors) - used
    assert all(
        k in checkpoints.IGNORED_KEYS or k.startswith(checkpoints.IGNORED_PREFIXES) for k in ignored
    )
    assert len(ignored) == len(_sd2_single_file_extras())
    # An SD 2.x key set is not an SD 1.x one.
    with pytest.raises(CheckpointError, match="lacks"):
        resolve_keys(tensors, "ldm", "sd-v1")


def test_full_sd2_diffusers_key_set_resolves():
    tensors = _full_diffusers_stand_in("sd-v2")
    tensors["text_encoder.text_model.embeddings.position_ids"] = _zeros((1, 77))
    tensors["vae.encoder.conv_in.weight"] = _zeros((128, 3, 3, 3))
    assert detect(tensors) == ("sd-v2", "diffusers")
    resolved = resolve_keys(tensors, "diffusers", "sd-v2")
    assert [len(v) for v in resolved.values()] == SD2_COUNTS
    # A 24th text layer (the one SD 2.x skips) is a left-over, not silently dropped.
    tensors["text_encoder.text_model.encoder.layers.23.mlp.fc1.bias"] = _zeros(4096)
    with pytest.raises(CheckpointError, match=r"layers\.23\.mlp\.fc1\.bias"):
        resolve_keys(tensors, "diffusers", "sd-v2")


def test_sd2_missing_resblock_is_named():
    tensors = _full_ldm_stand_in("sd-v2")
    key = "cond_stage_model.model.transformer.resblocks.7.attn.in_proj_weight"
    del tensors[key]
    with pytest.raises(CheckpointError, match=key.replace(".", r"\.")):
        resolve_keys(tensors, "ldm", "sd-v2")


def test_openclip_in_proj_is_split_q_k_v():
    width = 4
    weight = np.arange(3 * width * width, dtype=np.float16).reshape(3 * width, width)
    bias = np.arange(3 * width, dtype=np.float32) + 100
    for index in range(3):
        rows = slice(index * width, (index + 1) * width)
        dense = checkpoints.Param("in_w", "q_w", (width, width), "dense", ldm_part=(index, 3))
        out = checkpoints._to_keras("in_w", weight, dense)
        np.testing.assert_array_equal(out, weight[rows].T.astype(np.float32))
        copy = checkpoints.Param("in_b", "q_b", (width,), "copy", ldm_part=(index, 3))
        np.testing.assert_array_equal(checkpoints._to_keras("in_b", bias, copy), bias[rows])
        # Under its diffusers name the tensor is already split.
        np.testing.assert_array_equal(
            checkpoints._to_keras("q_w", weight[rows], dense), weight[rows].T
        )
    with pytest.raises(CheckpointError, match="split"):
        checkpoints._to_keras("in_b", bias[:-1], copy)


def test_sd2_text_params_split_in_proj_in_q_k_v_order():
    params = checkpoints.text_encoder_v2_params()
    layer = [p for p in params if ".resblocks.0.attn.in_proj_" in p.ldm]
    assert [(p.diffusers.rsplit(".", 2)[-2], p.ldm_part) for p in layer] == [
        ("q_proj", (0, 3)),
        ("q_proj", (0, 3)),
        ("k_proj", (1, 3)),
        ("k_proj", (1, 3)),
        ("v_proj", (2, 3)),
        ("v_proj", (2, 3)),
    ]
    assert params[-2].ldm == "cond_stage_model.model.ln_final.weight"
    assert params[-2].diffusers == "text_encoder.text_model.final_layer_norm.weight"


def test_linear_proj_accepts_a_1x1_convolution():
    param = checkpoints.Param("p", "p", (3, 2), "dense")
    weight = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = checkpoints._to_keras("p", weight[:, :, None, None], param)
    np.testing.assert_array_equal(out, weight.T)


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (_detection_dict(), ("sd-v1", "epsilon", 512)),
        ({**_detection_dict(), "global_step": 470000}, ("sd-v1", "epsilon", 512)),
        (_detection_dict(context=1024), ("sd-v2", "v_prediction", 768)),
        ({**_detection_dict(context=1024), "global_step": 875000}, ("sd-v2", "epsilon", 512)),
        ({**_detection_dict(context=1024), "global_step": 110000}, ("sd-v2", "v_prediction", 768)),
    ],
)
def test_describe_state(state, expected):
    info = checkpoints.describe(state)
    assert info == dict(zip(("family", "prediction_type", "default_size"), expected, strict=True))


@pytest.mark.parametrize(
    ("step", "prediction", "size"), [(875000, "epsilon", 512), (140000, "v_prediction", 768)]
)
def test_describe_sd2_ckpt_by_global_step(tmp_path, step, prediction, size):
    torch = pytest.importorskip("torch")
    path = tmp_path / "v2.ckpt"
    state = {k: torch.zeros(v.shape) for k, v in _detection_dict(context=1024).items()}
    torch.save({"state_dict": state, "global_step": step, "epoch": 3}, path)
    assert checkpoints.describe(path) == {
        "family": "sd-v2",
        "prediction_type": prediction,
        "default_size": size,
    }


def test_describe_sd2_safetensors_is_768_v(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "v2.safetensors"
    save_file(
        {k: np.zeros(v.shape, np.float16) for k, v in _detection_dict(context=1024).items()},
        str(path),
    )
    assert checkpoints.describe(path)["prediction_type"] == "v_prediction"
    assert checkpoints.describe(path)["default_size"] == 768


def _detection_folder(folder, context, scheduler=None, unet_config=None):
    import json

    from safetensors.numpy import save_file

    files = {
        "unet": {
            "conv_in.weight": np.zeros((320, 4, 3, 3), np.float16),
            "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight": np.zeros(
                (320, context), np.float16
            ),
        },
        "vae": {"w": np.zeros(1, np.float16)},
        "text_encoder": {"w": np.zeros(1, np.float16)},
    }
    for component, tensors in files.items():
        (folder / component).mkdir(parents=True)
        save_file(tensors, str(folder / component / checkpoints.DIFFUSERS_FILES[component][0]))
    if scheduler is not None:
        (folder / "scheduler").mkdir()
        (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler))
    if unet_config is not None:
        (folder / "unet" / "config.json").write_text(json.dumps(unet_config))
    return folder


@pytest.mark.parametrize(
    ("context", "scheduler", "unet_config", "expected"),
    [
        (
            1024,
            {"prediction_type": "v_prediction"},
            {"sample_size": 96},
            ("sd-v2", "v_prediction", 768),
        ),
        (1024, {"prediction_type": "epsilon"}, {"sample_size": 64}, ("sd-v2", "epsilon", 512)),
        (1024, {"prediction_type": "epsilon"}, None, ("sd-v2", "epsilon", 512)),
        (1024, {"_class_name": "PNDMScheduler"}, None, ("sd-v2", "epsilon", 512)),
        (1024, None, None, ("sd-v2", "v_prediction", 768)),
        (768, {"prediction_type": "epsilon"}, {"sample_size": 64}, ("sd-v1", "epsilon", 512)),
        (768, None, None, ("sd-v1", "epsilon", 512)),
    ],
)
def test_describe_diffusers_folder(tmp_path, context, scheduler, unet_config, expected):
    folder = _detection_folder(tmp_path / "m", context, scheduler, unet_config)
    info = checkpoints.describe(folder)
    assert info == dict(zip(("family", "prediction_type", "default_size"), expected, strict=True))


def test_describe_refuses_unknown_prediction_types(tmp_path):
    folder = _detection_folder(tmp_path / "m", 1024, {"prediction_type": "sample"})
    with pytest.raises(UnsupportedCheckpointError, match="sample"):
        checkpoints.describe(folder)


def test_converted_checkpoint_reads_as_its_weights():
    weights = {"text_encoder": [np.zeros((49408, 1024))], "diffusion_model": [], "decoder": []}
    converted = checkpoints.ConvertedCheckpoint(weights, "sd-v2", "v_prediction", 768, "ldm")
    assert dict(converted) == weights and converted["text_encoder"] is weights["text_encoder"]
    assert converted.describe() == {
        "family": "sd-v2",
        "prediction_type": "v_prediction",
        "default_size": 768,
    }
    assert checkpoints._family_of_weights(converted) == "sd-v2"
    assert checkpoints._family_of_weights(weights) == "sd-v2"
    weights["text_encoder"] = [np.zeros((49408, 768))]
    assert checkpoints._family_of_weights(weights) == "sd-v1"


def test_convert_checkpoint_refuses_unknown_prediction_type(tmp_path):
    with pytest.raises(UsageError, match="prediction type"):
        checkpoints.convert_checkpoint(tmp_path / "x.safetensors", prediction_type="sample")


def test_describe_reads_only_safetensors_headers(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "v1.safetensors"
    tensors = {k: np.ones(v.shape, np.float32) for k, v in _detection_dict().items()}
    save_file(tensors, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])  # the tensor data is never read
    assert checkpoints.describe(path)["family"] == "sd-v1"
    with pytest.raises(CheckpointError, match="could not read"):
        read_checkpoint(path)


def test_map_weights_can_consume_its_input(monkeypatch):
    param = checkpoints.Param
    tiny = {
        "net": lambda: [
            param("in_proj", "q", (2, 2), "dense", ldm_part=(0, 2)),
            param("b", "b", (3,), "copy"),
            param("in_proj", "k", (2, 2), "dense", ldm_part=(1, 2)),
        ]
    }
    monkeypatch.setitem(checkpoints.PARAMS_BY_FAMILY, "tiny", tiny)
    fused = np.arange(8, dtype=np.float32).reshape(4, 2)
    tensors = {"in_proj": fused, "b": np.ones(3, np.float32), "alphas_cumprod": np.ones(2)}
    kept = checkpoints.map_weights(dict(tensors), "ldm", "tiny")
    consumed = checkpoints.map_weights(tensors, "ldm", "tiny", consume=True)
    assert list(tensors) == ["alphas_cumprod"]  # only the ignored tensor is left
    for a, b in zip(kept["net"], consumed["net"], strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(consumed["net"][2], fused[2:].T)
