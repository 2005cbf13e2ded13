"""The weight tables and the mapping onto keras weight lists (sdgen.convert.tables and
.mapping), and the name index from a checkpoint key to its keras weight.

Key resolution works on zero-cost stand-ins (``np.broadcast_to``) of full-size
tensors, and no network is built. The full-size conversion is compared with diffusers
in tests/reference/test_checkpoints_vs_diffusers.py, the tiny one in
tests/reference/test_tiny_conversion.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_index_converts_as_map_weights

from sdgen.convert import (
    IGNORED_KEYS,
    IGNORED_PREFIXES,
    PARAMS,
    PARAMS_BY_FAMILY,
    CheckpointError,
    Param,
    Widths,
    detect,
    family_tables,
    is_ignored,
    map_weights,
    name_index,
    resolve_keys,
    to_keras,
)
from sdgen.convert.tables import text_encoder_v2_params


def _zeros(shape):
    return np.broadcast_to(np.float16(0), shape)


def _torch_shape(param):
    if param.kind == "dense":
        return param.shape[::-1]
    if param.kind == "conv":
        h, w, n_in, n_out = param.shape
        return (n_out, n_in, h, w)
    return param.shape


def _full_ldm_stand_in(family="sd-v1"):
    """Every tensor of a single file of ``family``, as zero-cost stand-ins."""
    params = [p for make in PARAMS_BY_FAMILY[family].values() for p in make()]
    tensors = {}
    for p in params:
        shape = _torch_shape(p)
        if p.ldm_part is not None:  # OpenCLIP's fused q, k, v
            shape = (shape[0] * p.ldm_part[1], *shape[1:])
        tensors[p.ldm] = _zeros(shape)
    return tensors


def _full_diffusers_stand_in(family="sd-v1"):
    params = [p for make in PARAMS_BY_FAMILY[family].values() for p in make()]
    return {p.diffusers: _zeros(_torch_shape(p)) for p in params}


def test_param_lists_have_keras_cv_sizes():
    counts = {name: len(make()) for name, make in PARAMS.items()}
    assert counts == {"text_encoder": 196, "diffusion_model": 686, "decoder": 140, "encoder": 108}
    total = sum(int(np.prod(p.shape)) for make in PARAMS.values() for p in make())
    # TextEncoder, DiffusionModel, Decoder and ImageEncoder's count_params()
    assert total == 123_060_480 + 859_520_964 + 49_490_199 + 34_163_664


def test_full_key_set_resolves_with_ignored_extras():
    tensors = _full_ldm_stand_in()
    tensors.update(
        {
            "model_ema.decay": _zeros(()),
            "model_ema.diffusion_modelinput_blocks00weight": _zeros((320, 4, 3, 3)),
            "cond_stage_model.transformer.text_model.embeddings.position_ids": _zeros((1, 77)),
            "alphas_cumprod": _zeros(1000),
            "first_stage_model.loss.logvar": _zeros(()),
        }
    )
    assert detect(tensors) == ("sd-v1", "ldm")
    resolved = resolve_keys(tensors, "ldm")
    assert [len(v) for v in resolved.values()] == [196, 686, 140, 108]


@pytest.mark.parametrize("layout", ["ldm", "diffusers"])
def test_a_checkpoint_without_a_vae_encoder_resolves_without_one(layout):
    """Some checkpoints leave the VAE's encoder out: they still convert (for txt2img)."""
    tensors = _full_ldm_stand_in() if layout == "ldm" else _full_diffusers_stand_in()
    prefix = "first_stage_model." if layout == "ldm" else "vae."
    for key in [k for k in tensors if k.startswith((prefix + "encoder.", prefix + "quant_conv."))]:
        del tensors[key]
    resolved = resolve_keys(tensors, layout)
    assert list(resolved) == ["text_encoder", "diffusion_model", "decoder"]


def test_a_checkpoint_with_part_of_a_vae_encoder_names_what_it_lacks():
    tensors = _full_ldm_stand_in()
    del tensors["first_stage_model.encoder.mid.attn_1.q.weight"]
    with pytest.raises(CheckpointError, match=r"lacks first_stage_model\.encoder\.mid\.attn_1"):
        resolve_keys(tensors, "ldm")


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
        map_weights(tensors, "ldm")


def test_layout_transforms():
    dense = Param("a", "a", (3, 2), "dense")
    weight = np.arange(6, dtype=np.float16).reshape(2, 3)
    out = to_keras("a", weight, dense)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, weight.T)

    conv = Param("c", "c", (3, 3, 2, 5), "conv")
    kernel = np.random.default_rng(0).standard_normal((5, 2, 3, 3)).astype(np.float32)
    out = to_keras("c", kernel, conv)
    assert out[1, 2, 0, 4] == kernel[4, 0, 1, 2]

    one_by_one = Param("q", "q", (1, 1, 2, 5), "conv")
    linear = np.arange(10, dtype=np.float32).reshape(5, 2)
    out = to_keras("q", linear, one_by_one)
    np.testing.assert_array_equal(out[0, 0], linear.T)
    out = to_keras("q", linear[:, :, None, None], one_by_one)
    np.testing.assert_array_equal(out[0, 0], linear.T)


def test_integer_tensor_is_refused():
    param = Param("a", "a", (2,), "copy")
    with pytest.raises(CheckpointError, match="dtype"):
        to_keras("a", np.zeros(2, np.int64), param)


def test_diffusers_layout_resolves_with_old_vae_attention_names():
    params = [p for make in PARAMS.values() for p in make()]
    tensors = {}
    for p in params:
        key = p.aliases[0] if p.aliases else p.diffusers
        tensors[key] = _zeros(_torch_shape(p))
    assert any(".encoder.mid_block.attentions.0.query." in k for k in tensors)
    assert any(".decoder.mid_block.attentions.0.query." in k for k in tensors)
    assert detect(tensors) == ("sd-v1", "diffusers")
    resolved = resolve_keys(tensors, "diffusers")
    assert [len(v) for v in resolved.values()] == [196, 686, 140, 108]


# -- SD 2.x --------------------------------------------------------------------------------

SD2_COUNTS = [372, 686, 140, 108]


def test_sd2_param_lists_have_keras_cv_sizes():
    families = PARAMS_BY_FAMILY
    counts = [len(make()) for make in families["sd-v2"].values()]
    assert counts == SD2_COUNTS
    totals = [sum(int(np.prod(p.shape)) for p in make()) for make in families["sd-v2"].values()]
    # TextEncoderV2(77).count_params(), DiffusionModelV2(64, 64, 77).count_params(),
    # Decoder(64, 64).count_params(), ImageEncoder().count_params()
    assert totals == [340_387_840, 865_910_724, 49_490_199, 34_163_664]


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
            "first_stage_model.loss.logvar": _zeros(()),
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
    assert all(k in IGNORED_KEYS or k.startswith(IGNORED_PREFIXES) for k in ignored)
    assert len(ignored) == len(_sd2_single_file_extras())
    # An SD 2.x key set is not an SD 1.x one.
    with pytest.raises(CheckpointError, match="lacks"):
        resolve_keys(tensors, "ldm", "sd-v1")


def test_full_sd2_diffusers_key_set_resolves():
    tensors = _full_diffusers_stand_in("sd-v2")
    tensors["text_encoder.text_model.embeddings.position_ids"] = _zeros((1, 77))
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
        dense = Param("in_w", "q_w", (width, width), "dense", ldm_part=(index, 3))
        out = to_keras("in_w", weight, dense)
        np.testing.assert_array_equal(out, weight[rows].T.astype(np.float32))
        copy = Param("in_b", "q_b", (width,), "copy", ldm_part=(index, 3))
        np.testing.assert_array_equal(to_keras("in_b", bias, copy), bias[rows])
        # Under its diffusers name the tensor is already split.
        np.testing.assert_array_equal(to_keras("q_w", weight[rows], dense), weight[rows].T)
    with pytest.raises(CheckpointError, match="split"):
        to_keras("in_b", bias[:-1], copy)


def test_sd2_text_params_split_in_proj_in_q_k_v_order():
    params = text_encoder_v2_params()
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
    param = Param("p", "p", (3, 2), "dense")
    weight = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = to_keras("p", weight[:, :, None, None], param)
    np.testing.assert_array_equal(out, weight.T)


def test_map_weights_can_consume_its_input(monkeypatch):
    param = Param
    tiny = {
        "net": lambda: [
            param("in_proj", "q", (2, 2), "dense", ldm_part=(0, 2)),
            param("b", "b", (3,), "copy"),
            param("in_proj", "k", (2, 2), "dense", ldm_part=(1, 2)),
        ]
    }
    monkeypatch.setitem(PARAMS_BY_FAMILY, "tiny", tiny)
    fused = np.arange(8, dtype=np.float32).reshape(4, 2)
    tensors = {"in_proj": fused, "b": np.ones(3, np.float32), "alphas_cumprod": np.ones(2)}
    kept = map_weights(dict(tensors), "ldm", "tiny")
    consumed = map_weights(tensors, "ldm", "tiny", consume=True)
    assert list(tensors) == ["alphas_cumprod"]  # only the ignored tensor is left
    for a, b in zip(kept["net"], consumed["net"], strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(consumed["net"][2], fused[2:].T)


# -- the name index ------------------------------------------------------------------------

TINY = Widths(text=8, text_layers=2, unet=(8, 16, 32, 32), context=8, decoder=(16, 16, 8, 8))


def _tiny_checkpoint(family, layout, old_names=False):
    """A tiny checkpoint of ``family``'s tables at ``TINY`` widths in ``layout``: random
    tensors in torch's shapes (an SD 2.x single file's q, k and v fused, as OpenCLIP
    stores them; with ``old_names``, diffusers' older VAE attention names), plus tensors
    the ignore lists name."""
    rng = np.random.default_rng(0)
    tensors = {}
    for make in family_tables(family, TINY).values():
        for p in make():
            shape = _torch_shape(p)
            if layout == "ldm":
                key = p.ldm
                if p.ldm_part is not None:
                    shape = (shape[0] * p.ldm_part[1], *shape[1:])
            else:
                key = p.aliases[0] if old_names and p.aliases else p.diffusers
            tensors[key] = rng.standard_normal(shape).astype(np.float16)
    if layout == "ldm":
        tensors["first_stage_model.loss.logvar"] = np.zeros((), np.float32)
    else:
        tensors["text_encoder.text_model.embeddings.position_ids"] = np.arange(77)[None]
    tensors["alphas_cumprod"] = np.ones(1000, np.float32)
    return tensors


@pytest.mark.parametrize(
    ("family", "layout", "old_names"),
    [
        ("sd-v1", "ldm", False),
        ("sd-v2", "ldm", False),
        ("sd-v1", "diffusers", True),
        ("sd-v2", "diffusers", False),
    ],
)
def test_name_index_covers_a_tiny_checkpoint_once_and_converts_as_map_weights(
    family, layout, old_names
):
    tensors = _tiny_checkpoint(family, layout, old_names)
    weights = map_weights(dict(tensors), layout, params=family_tables(family, TINY))
    index = name_index(layout, family, TINY)
    assert not [key for key in index if is_ignored(key)]

    used = [key for key in tensors if not is_ignored(key)]
    assert len(used) == len(tensors) - 2  # the two ignored extras
    assert_index_converts_as_map_weights(tensors, weights, index)


def test_name_index_splits_openclip_in_proj_in_q_k_v_and_knows_old_names():
    fused = "cond_stage_model.model.transformer.resblocks.1.attn.in_proj_weight"
    slots = name_index("ldm", "sd-v2", TINY)[fused]
    assert [(s.role, s.param.ldm_part) for s in slots] == [
        ("text_encoder", (0, 3)),
        ("text_encoder", (1, 3)),
        ("text_encoder", (2, 3)),
    ]
    assert [s.position for s in slots] == sorted({s.position for s in slots})
    index = name_index("diffusers")
    old = "vae.decoder.mid_block.attentions.0.query.weight"
    new = "vae.decoder.mid_block.attentions.0.to_q.weight"
    assert [(s.role, s.position) for s in index[old]] == [(s.role, s.position) for s in index[new]]
    assert len(index[new]) == 1
    with pytest.raises(ValueError, match="layout"):
        name_index("kohya")
