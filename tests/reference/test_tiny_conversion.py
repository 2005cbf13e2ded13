"""The checkpoint conversion against diffusers/transformers at tiny size, in seconds.

The same check as test_checkpoints_vs_diffusers.py (which runs at full size and is
slow): diffusers networks with random weights are saved as a diffusers folder, read
back with sdgen's reader, mapped with sdgen's weight tables (at the tiny widths) into
sdgen's network layouts (``sdgen.networks.layouts``), and the text states, the U-Net's
prediction and the VAE decode must agree within 1e-4 max abs,
for SD 1.x's layout and for SD 2.x's (exact GELU, linear projections).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_index_converts_as_map_weights

from sdgen import convert
from sdgen.networks import layouts
from sdgen.networks.layouts import Attention
from sdgen.pipeline import timestep_embedding

from . import keras_cv_layouts
from . import sd_architectures as architectures
from .conftest import require

torch = require("torch")
diffusers = require("diffusers")
transformers = require("transformers")

TINY = convert.Widths(
    text=32, text_layers=2, unet=(32, 64, 128, 128), context=32, decoder=(64, 64, 32, 32)
)
TEXT_HEADS, UNET_HEADS = 2, 8
SIZE = 64  # pixels
LIMIT = 1e-4


def diffusers_networks(v2: bool, seed: int):
    return architectures.small_networks(TINY, TEXT_HEADS, UNET_HEADS, seed, SIZE, v2=v2)


def save_diffusers_folder(folder, v2: bool, seed: int):
    """Tiny diffusers networks with random weights, saved as a diffusers folder."""
    text, unet, vae = diffusers_networks(v2, seed)
    text.save_pretrained(folder / "text_encoder")
    unet.save_pretrained(folder / "unet")
    vae.save_pretrained(folder / "vae")
    return text, unet, vae


@pytest.mark.parametrize("v2", [False, True], ids=["sd1-layout", "sd2-layout"])
def test_tiny_diffusers_folder_converts_to_equivalent_keras_networks(tmp_path, v2):
    folder = tmp_path / "tiny"
    text, unet, vae = save_diffusers_folder(folder, v2, seed=7 if v2 else 3)

    rng = np.random.default_rng(0)
    tokens = np.concatenate([[49406], rng.integers(0, 49406, 12), [49407] * 64])
    tokens = tokens.astype(np.int32)[None]
    latent = rng.standard_normal((1, SIZE // 8, SIZE // 8, 4)).astype(np.float32)
    context = rng.standard_normal((1, 77, TINY.context)).astype(np.float32)
    timestep = 501.0
    with torch.no_grad():
        expected = {
            "text": text(
                input_ids=torch.from_numpy(tokens.astype(np.int64))
            ).last_hidden_state.numpy(),
            "unet": unet(
                torch.from_numpy(latent.transpose(0, 3, 1, 2).copy()),
                timestep,
                encoder_hidden_states=torch.from_numpy(context),
            )
            .sample.numpy()
            .transpose(0, 2, 3, 1),
            "vae": vae.decode(torch.from_numpy(latent.transpose(0, 3, 1, 2).copy()) / 0.18215)
            .sample.numpy()
            .transpose(0, 2, 3, 1),
        }

    tables = convert.family_tables("sd-v2" if v2 else "sd-v1", TINY)
    tensors = convert.read_checkpoint(folder)
    weights = convert.map_weights(tensors, "diffusers", params=tables)

    encoder = layouts.text_encoder(TINY, TEXT_HEADS, "gelu" if v2 else "quick_gelu")
    encoder.set_weights(weights["text_encoder"])
    positions = np.arange(77, dtype=np.int32)[None]
    got = {"text": encoder.predict_on_batch([tokens, positions])}
    attention = Attention(heads=UNET_HEADS, fully_connected=v2)
    model = layouts.diffusion_model(TINY, attention, SIZE, SIZE)
    model.set_weights(weights["diffusion_model"])
    t_emb = timestep_embedding(timestep, dim=TINY.unet[0])[None]
    got["unet"] = model.predict_on_batch([latent, t_emb, context])
    decoder = layouts.decoder(TINY, SIZE, SIZE)
    decoder.set_weights(weights["decoder"])
    got["vae"] = decoder.predict_on_batch(latent)

    errors = {name: float(np.abs(got[name] - expected[name]).max()) for name in expected}
    print(errors)
    for name in expected:
        assert got[name].shape == expected[name].shape
        assert np.abs(expected[name]).max() > 0.5  # a working network's output
    assert max(errors.values()) <= LIMIT, errors


@pytest.mark.parametrize("v2", [False, True], ids=["sd1-layout", "sd2-layout"])
def test_name_index_finds_each_tensor_of_a_tiny_diffusers_folder_where_conversion_puts_it(
    tmp_path, v2
):
    """Every tensor diffusers saves is either ignored or in the name index; together they
    reach each keras weight exactly once; and a tensor looked up and converted alone is
    the array the whole conversion puts at that place (what LoRA merging relies on)."""
    family = "sd-v2" if v2 else "sd-v1"
    save_diffusers_folder(tmp_path / "tiny", v2, seed=5)
    tensors = convert.read_checkpoint(tmp_path / "tiny")
    weights = convert.map_weights(
        dict(tensors), "diffusers", params=convert.family_tables(family, TINY)
    )
    index = convert.name_index("diffusers", family, TINY)

    assert_index_converts_as_map_weights(tensors, weights, index)


@pytest.mark.slow
@pytest.mark.full_size
@pytest.mark.parametrize("role", ["text_encoder", "diffusion_model", "decoder", "encoder"])
def test_layouts_at_sd_widths_list_the_weights_keras_cv_classes_list(role):
    """The tiny check stands for the full-size one only if sdgen's layouts are keras_cv's:
    at SD's widths they list the weights of keras_cv's own classes, layer for layer, so
    keras_cv's published files load into them."""
    from sdgen.catalog import get_model_spec
    from sdgen.families import family_of

    spec = get_model_spec("sd-v1.4")
    ours = family_of(spec).build(role, spec, SIZE, SIZE)
    theirs = keras_cv_layouts.keras_cv_network(role, SIZE)
    assert [tuple(w.shape) for w in ours.weights] == [tuple(w.shape) for w in theirs.weights]
    assert keras_cv_layouts.layer_names(ours) == keras_cv_layouts.layer_names(theirs)


def _encode_expected(vae, image):
    """diffusers' latents of ``image`` (N, H, W, 3): the posterior's mean times 0.18215."""
    with torch.no_grad():
        sample = torch.from_numpy(image.transpose(0, 3, 1, 2).copy())
        mean = vae.encode(sample).latent_dist.mean * 0.18215
    return mean.numpy().transpose(0, 2, 3, 1)


def _ldm_vae(vae):
    """``vae``'s tensors under SD single-file (CompVis) names, renamed with sdgen's tables
    and checked against diffusers' own LDM converter: converting them back gives every
    tensor of ``vae`` under its name, so the names are diffusers', not only ours."""
    from diffusers.loaders import single_file_utils as sfu

    tables = convert.family_tables("sd-v1", TINY)
    state = {f"vae.{k}": v.numpy() for k, v in vae.state_dict().items()}
    ldm = {}
    for param in tables["encoder"]() + tables["decoder"]():
        key = next(k for k in (param.diffusers, *param.aliases) if k in state)
        value = state[key]
        if param.kind == "conv" and value.ndim == 2:  # the VAE's attention: 1x1 convs
            value = value[:, :, None, None]
        ldm[param.ldm] = value
    config = {
        "down_block_types": ("DownEncoderBlock2D",) * 4,
        "up_block_types": ("UpDecoderBlock2D",) * 4,
    }
    back = sfu.convert_ldm_vae_checkpoint({k: torch.from_numpy(v) for k, v in ldm.items()}, config)
    assert sorted(back) == sorted(vae.state_dict())
    for key, value in vae.state_dict().items():
        np.testing.assert_array_equal(back[key].reshape(value.shape).numpy(), value.numpy())
    return ldm


@pytest.mark.parametrize("layout", ["diffusers", "ldm"])
def test_tiny_vae_encoder_converts_to_diffusers_encode_mean(tmp_path, layout):
    """sdgen's encoder on converted weights gives diffusers'
    ``AutoencoderKL.encode(x).latent_dist.mean * 0.18215``, from a diffusers folder and
    from a single file's names; on OpenVINO what it gives on TensorFlow."""
    from sdgen.runtimes.openvino_weights import concrete_function

    _, _, vae = save_diffusers_folder(tmp_path / "tiny", False, seed=11)
    image = np.random.default_rng(2).uniform(-1, 1, (1, SIZE, SIZE, 3)).astype(np.float32)
    expected = _encode_expected(vae, image)

    tables = convert.family_tables("sd-v1", TINY)
    if layout == "diffusers":
        tensors = convert.read_checkpoint(tmp_path / "tiny")
        tensors = {k: v for k, v in tensors.items() if k.startswith("vae.")}
    else:
        tensors = _ldm_vae(vae)
    params = {role: tables[role] for role in ("decoder", "encoder")}
    weights = convert.map_weights(tensors, layout, params=params)
    encoder = layouts.encoder(TINY, SIZE, SIZE)
    encoder.set_weights(weights["encoder"])
    got = encoder.predict_on_batch(image)

    assert got.shape == expected.shape == (1, SIZE // 8, SIZE // 8, 4)
    assert np.abs(expected).max() > 0.1  # a working network's latents
    error = float(np.abs(got - expected).max())
    print(f"{layout}: max abs error {error:.3g}")
    assert error <= LIMIT

    if layout == "ldm":
        return
    openvino = pytest.importorskip("openvino")
    compiled = openvino.Core().compile_model(
        openvino.convert_model(concrete_function("encoder", encoder)),
        "CPU",
        {"INFERENCE_PRECISION_HINT": "f32"},
    )
    ov = np.asarray(compiled.create_infer_request().infer([image])[0])
    assert float(np.abs(ov - got).max()) <= LIMIT
