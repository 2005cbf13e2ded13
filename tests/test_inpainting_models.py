"""9-channel (inpainting) models, in seconds: the inpainting family records, the
generated ``tiny-inpainting`` model on both runtimes, a 9-channel single file imported
by ``sdgen import``, and LoRAs for the base family on an inpainting one.

That sdgen's conversion of a real 9-channel U-Net computes what diffusers' does is
proven in tests/reference/test_inpainting_conversion.py."""

from __future__ import annotations

import dataclasses
import json
import types

import numpy as np
import pytest
import safetensors.numpy
from conftest import _to_torch

from sdgen import convert
from sdgen.adapters.lora import LoraError, lora_deltas, read_lora
from sdgen.adapters.lora.uses import check_family
from sdgen.catalog import get_model_spec
from sdgen.errors import ModelError
from sdgen.families import FAMILIES, family_of, variant_with_channels
from sdgen.pipeline import load_pipeline
from sdgen.runtimes.signature import NetworkSignature

SIZE = 64
SIGNATURE = NetworkSignature(SIZE, SIZE, 77, 9)
T_DIM = FAMILIES["tiny"].timestep_embedding_dim

# the OpenVINO conversions of this module share nothing with test_runtimes.py's cache
pytestmark = pytest.mark.xdist_group("openvino-cache")


def unet_inputs(seed=0, rows=2, size=SIZE, channels=9):
    rng = np.random.default_rng(seed)
    latents = rng.standard_normal((rows, size // 8, SIZE // 8, channels)).astype(np.float32)
    t_emb = rng.standard_normal((rows, T_DIM)).astype(np.float32)
    contexts = rng.standard_normal((rows, 77, 64)).astype(np.float32)
    return latents, t_emb, contexts


# -- the family records ---------------------------------------------------------------


@pytest.mark.parametrize("base", ["sd-v1", "sd-v2", "tiny"])
def test_each_family_has_an_inpainting_variant_differing_only_in_its_u_net_input(base):
    family = FAMILIES[f"{base}-inpainting"]
    assert family.in_channels == 9 and family.inpainting
    assert not FAMILIES[base].inpainting and FAMILIES[base].in_channels == 4
    assert family.variant_of == base and family.base_name == base
    assert variant_with_channels(base, 9) is family
    assert variant_with_channels(family.name, 4) is FAMILIES[base]
    same = dataclasses.replace(
        family, name=base, in_channels=4, variant_of=None, v_prediction_size=None
    )
    theirs = dataclasses.replace(FAMILIES[base], v_prediction_size=None)
    if base == "sd-v2":  # SD 2 inpainting: epsilon at 512 px, whatever a single file says
        assert family.size_for("epsilon") == 512 and family.single_files_say_prediction
        same = dataclasses.replace(same, single_files_say_prediction=False)
    assert same == theirs


def test_the_weight_tables_give_conv_in_9_input_channels():
    for name in ("sd-v1-inpainting", "sd-v2-inpainting"):
        ours = convert.PARAMS_BY_FAMILY[name]["diffusion_model"]()
        base = convert.PARAMS_BY_FAMILY[FAMILIES[name].base_name]["diffusion_model"]()
        (conv_in,) = [p for p in ours if p.diffusers == "unet.conv_in.weight"]
        assert conv_in.shape[2] == 9
        # every other weight is the base family's
        assert [p for p in ours if p is not conv_in and p.diffusers != conv_in.diffusers] == [
            p for p in base if p.diffusers != "unet.conv_in.weight"
        ]


def test_tiny_inpainting_is_a_generated_model_of_the_tiny_inpainting_family():
    spec = get_model_spec("tiny-inpainting")
    assert spec.generated and spec.family == "tiny-inpainting"
    unet = family_of(spec).build("diffusion_model", spec, SIZE, SIZE)
    assert tuple(unet.inputs[0].shape[1:]) == (SIZE // 8, SIZE // 8, 9)


# -- both runtimes ---------------------------------------------------------------------


@pytest.mark.slow
def test_tiny_inpainting_denoises_9_channel_latents_on_both_runtimes():
    tf = load_pipeline("tiny-inpainting", width=SIZE, height=SIZE)
    ov = load_pipeline("tiny-inpainting", width=SIZE, height=SIZE, runtime="openvino")
    assert tf.family.inpainting and ov.family.inpainting
    latents, t_emb, contexts = unet_inputs()
    expected = tf.backend.networks(SIGNATURE).denoise(latents, t_emb, contexts)
    got = ov.backend.networks(SIGNATURE).denoise(latents, t_emb, contexts)
    assert expected.shape == got.shape == (2, SIZE // 8, SIZE // 8, 4)
    assert np.abs(expected).max() > 0.1
    assert np.abs(expected - got).max() <= 1e-3
    assert any("-in9" in name for name in ov.backend.converted)

    # the mask and masked-image channels are inputs the U-Net uses
    moved = latents.copy()
    moved[..., 4:] += 1.0
    assert np.abs(tf.backend.networks(SIGNATURE).denoise(moved, t_emb, contexts) - expected).max()
    assert np.abs(ov.backend.networks(SIGNATURE).denoise(moved, t_emb, contexts) - got).max()

    # another size (a hires pass) on the same layers, and on OpenVINO its own conversion
    tall = NetworkSignature(2 * SIZE, SIZE, 77, 9)
    rows = unet_inputs(1, rows=1, size=2 * SIZE)
    a = tf.backend.networks(tall).denoise(*rows)
    b = ov.backend.networks(tall).denoise(*rows)
    assert a.shape == b.shape == (1, 2 * SIZE // 8, SIZE // 8, 4)
    assert np.abs(a - b).max() <= 1e-3

    # a 9-channel U-Net runs no 4-channel latents
    with pytest.raises(ModelError, match="9 input channels, not 4"):
        tf.backend.networks(NetworkSignature(SIZE, SIZE))


# -- import ----------------------------------------------------------------------------


def tiny_inpainting_checkpoint(path):
    """``tiny-inpainting``'s weights as a single file (LDM names): the test's own
    inversion of the converter's name index, as tests/conftest.py's ``tiny_checkpoint``."""
    spec = get_model_spec("tiny-inpainting")
    family = family_of(spec)
    weights = {
        role: [np.asarray(w) for w in family.build(role, spec, SIZE, SIZE).weights]
        for role in ("text_encoder", "diffusion_model", "decoder", "encoder")
    }
    tensors = {}
    for key, slots in convert.name_index("ldm", "tiny-inpainting").items():
        (slot,) = slots
        value = _to_torch(weights[slot.role][slot.position], slot.param.kind)
        tensors[key] = np.ascontiguousarray(value)
    assert tensors["model.diffusion_model.input_blocks.0.0.weight"].shape[1] == 9
    safetensors.numpy.save_file(tensors, str(path))


@pytest.mark.slow
def test_an_imported_9_channel_checkpoint_is_an_inpainting_model_that_loads(run_cli, tmp_path):
    path = tmp_path / "inpaint.safetensors"
    tiny_inpainting_checkpoint(path)
    result = run_cli("import", path, "--name", "my-inpainting")
    assert result.exit_code == 0, result.stderr
    assert "tiny-inpainting, epsilon, 128 px" in result.stderr
    listed = json.loads(run_cli("models", "--json").stdout)["models"]
    (row,) = [row for row in listed if row["name"] == "my-inpainting"]
    assert row["family"] == "tiny-inpainting" and row["imported"]

    mine = load_pipeline("my-inpainting", width=SIZE, height=SIZE)
    reference = load_pipeline("tiny-inpainting", width=SIZE, height=SIZE)
    rows = unet_inputs(2)
    np.testing.assert_array_equal(
        mine.backend.networks(SIGNATURE).denoise(*rows),
        reference.backend.networks(SIGNATURE).denoise(*rows),
    )


# -- LoRAs -----------------------------------------------------------------------------

CONV_IN = "lora_unet_conv_in"
TO_Q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"


def lora_file(path, conv_in_channels: int, seed=0):
    """A kohya LoRA of conv_in (``conv_in_channels`` inputs) and one attention query."""
    rng = np.random.default_rng(seed)
    rank = 2
    tensors = {
        f"{CONV_IN}.lora_down.weight": rng.standard_normal((rank, conv_in_channels, 3, 3)),
        f"{CONV_IN}.lora_up.weight": rng.standard_normal((32, rank, 1, 1)),
        f"{CONV_IN}.alpha": np.array(1.0),
        f"{TO_Q}.lora_down.weight": rng.standard_normal((rank, 32)),
        f"{TO_Q}.lora_up.weight": rng.standard_normal((32, rank)),
    }
    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
    safetensors.numpy.save_file(tensors, str(path))
    return read_lora(path)


def _slot(family: str, key: str):
    (slot,) = convert.name_index("diffusers", family)[key]
    return slot


def test_a_text_to_image_lora_changes_conv_in_of_an_inpainting_model_zero_padded(tmp_path):
    lora = lora_file(tmp_path / "a.safetensors", 4)
    plain = lora_deltas([(lora, 1.0, 1.0)], "tiny")
    padded = lora_deltas([(lora, 1.0, 1.0)], "tiny-inpainting")
    key = "unet.conv_in.weight"
    ours, theirs = _slot("tiny-inpainting", key), _slot("tiny", key)
    change = padded[(ours.role, ours.position)]
    assert change.shape == (3, 3, 9, 32)
    np.testing.assert_array_equal(change[:, :, :4], plain[(theirs.role, theirs.position)])
    assert not change[:, :, 4:].any() and change[:, :, :4].any()
    q = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"
    a, b = _slot("tiny-inpainting", q), _slot("tiny", q)
    np.testing.assert_array_equal(padded[(a.role, a.position)], plain[(b.role, b.position)])


def test_an_inpainting_lora_does_not_fit_a_text_to_image_model(tmp_path):
    lora = lora_file(tmp_path / "nine.safetensors", 9)
    assert lora_deltas([(lora, 1.0, 1.0)], "tiny-inpainting")
    with pytest.raises(LoraError, match="conv_in"):
        lora_deltas([(lora, 1.0, 1.0)], "tiny")


def test_loras_of_the_base_family_are_accepted_and_others_refused():
    sd1 = types.SimpleNamespace(family="sd-v1", path="sd1.safetensors")
    sd2 = types.SimpleNamespace(family="sd-v2", path="sd2.safetensors")
    check_family(sd1, FAMILIES["sd-v1-inpainting"])
    check_family(sd2, FAMILIES["sd-v2-inpainting"])
    with pytest.raises(LoraError, match="for sd-v2 models, not for this sd-v1-inpainting"):
        check_family(sd2, FAMILIES["sd-v1-inpainting"])
    with pytest.raises(LoraError, match="for sd-v1 models"):
        check_family(sd1, FAMILIES["sd-v2-inpainting"])


def test_plain_converted_weights_of_a_9_channel_u_net_are_written_as_the_inpainting_family():
    from sdgen.convert.writer import _family_of_weights

    def weights(channels):
        unet = [np.zeros((32, 128)), np.zeros(128), np.zeros((3, 3, channels, 32))]
        return {"text_encoder": [np.zeros((49408, 64))], "diffusion_model": unet}

    assert _family_of_weights(weights(4)) == "tiny"
    assert _family_of_weights(weights(9)) == "tiny-inpainting"
    assert _family_of_weights({"text_encoder": [np.zeros((49408, 768))]}) == "sd-v1"
