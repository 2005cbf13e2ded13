"""Converted checkpoints against the diffusers / transformers networks they came from.

Full-size SD 1.5 networks (CLIPTextModel, UNet2DConditionModel, AutoencoderKL) are built
with seeded random weights, every parameter perturbed so no two norms or biases are
alike (a swapped pair would show), saved as a diffusers folder, converted with
:mod:`sdgen.convert` and loaded into keras_cv's networks. The text encoder's hidden
states, the U-Net's noise prediction, the VAE decode and the VAE encoder's latents
(diffusers' ``encode(x).latent_dist.mean * 0.18215``) must agree within 1e-4 max abs.

The diffusers side is unmodified: sdgen builds keras_cv's networks with SD's exact GELU
and GroupNorm epsilons (``sdgen.networks.layers``), which keras_cv itself
approximates (tanh GELU, epsilon 1e-5), so the comparison covers both the conversion and
the arithmetic.

The SD 2.1 test does the same for ``TextEncoderV2`` (23 of OpenCLIP's 24 layers, as
diffusers' SD 2 ``CLIPTextModel``) and ``DiffusionModelV2`` (linear proj_in/proj_out,
64-wide heads, context 1024), through sdgen's builders. The VAE decoder's mapping is
the same for both families and is compared numerically in the SD 1.5 test only; the
SD 2.1 test checks that its weights load.

Two more tests check the single-file (CompVis / OpenCLIP) names against diffusers' own
LDM converters, without building any network.
"""

from __future__ import annotations

import dataclasses
import gc
import shutil

import numpy as np
import pytest

from sdgen import convert
from sdgen.pipeline import timestep_embedding

from . import sd_architectures as architectures
from .conftest import require

torch = require("torch")
diffusers = require("diffusers")
transformers = require("transformers")

pytestmark = [pytest.mark.slow, pytest.mark.full_size]

SIZE = 64  # pixels; the latent is 8x8. Weights do not depend on it.


def _release():
    """Free what was deleted, and hand freed heap back to the system (glibc keeps it
    otherwise, and the next full-size test would start from this one's peak)."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


@pytest.fixture
def remove_tmp_path(tmp_path):
    """Delete the test's gigabytes of files when it ends (pytest keeps the last runs'),
    and release its memory before the next test."""
    yield
    shutil.rmtree(tmp_path, ignore_errors=True)
    import keras

    keras.backend.clear_session()
    _release()


def _close(actual, expected, tol=1e-4, min_scale=0.5):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape
    scale = float(np.abs(expected).max())
    error = float(np.abs(actual - expected).max())
    print(f"max abs error {error:.3g} (output scale {scale:.3g})")
    assert scale > min_scale  # outputs of a working network, not near-zero ones
    assert error <= tol, f"max abs error {error:.3g} (output scale {scale:.3g})"


@pytest.mark.usefixtures("remove_tmp_path")
def test_diffusers_folder_converts_to_equivalent_keras_networks(tmp_path):
    import keras

    from sdgen.catalog import get_model_spec
    from sdgen.families import family_of
    from sdgen.networks.h5 import load_weights

    folder = tmp_path / "sd15"
    rng = np.random.default_rng(0)
    tokens = np.concatenate([[49406], rng.integers(0, 49406, 20), [49407] * 56]).astype(np.int32)
    latent = rng.standard_normal((1, SIZE // 8, SIZE // 8, 4)).astype(np.float32)
    context = rng.standard_normal((1, 77, 768)).astype(np.float32)
    image = rng.uniform(-1, 1, (1, SIZE, SIZE, 3)).astype(np.float32)
    timestep = 981.0
    expected = {}

    with torch.no_grad():
        text = architectures.text_encoder("sd15")
        architectures.perturb(text, 1)
        out = text(input_ids=torch.from_numpy(tokens[None].astype(np.int64)))
        expected["text"] = out.last_hidden_state.numpy()
        text.save_pretrained(folder / "text_encoder")
        del text, out
        _release()

        unet = architectures.unet("sd15", sample_size=SIZE // 8)
        architectures.perturb(unet, 2)
        unet.save_pretrained(folder / "unet")
        sample = torch.from_numpy(latent.transpose(0, 3, 1, 2).copy())
        pred = unet(sample, timestep, encoder_hidden_states=torch.from_numpy(context)).sample
        expected["unet"] = pred.numpy().transpose(0, 2, 3, 1)
        del unet, pred
        _release()

        vae = architectures.vae(sample_size=SIZE)
        architectures.perturb(vae, 3)
        vae.save_pretrained(folder / "vae")
        decoded = vae.decode(torch.from_numpy(latent.transpose(0, 3, 1, 2).copy()) / 0.18215)
        expected["vae"] = decoded.sample.numpy().transpose(0, 2, 3, 1)
        mean = vae.encode(torch.from_numpy(image.transpose(0, 3, 1, 2).copy())).latent_dist.mean
        expected["encoder"] = (mean * 0.18215).numpy().transpose(0, 2, 3, 1)
        del vae, decoded, mean
        _release()

    weights = convert.convert_checkpoint(folder)
    assert weights.describe() == {
        "family": "sd-v1",
        "prediction_type": "epsilon",
        "default_size": SIZE,  # the U-Net config's sample_size times 8
    }
    out = convert.save_converted(weights, tmp_path / "kcv")
    del weights
    _release()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".kcv")]  # no staging left
    assert sorted(p.name for p in out.iterdir()) == sorted(convert.FILENAMES.values())
    spec = get_model_spec("sd-v1.4")

    def load(role, size):
        model = family_of(spec).build(role, spec, size, size)
        load_weights(model, out / convert.FILENAMES[role])
        return model

    encoder = load("text_encoder", SIZE)
    positions = np.arange(77, dtype=np.int32)[None]
    _close(encoder.predict_on_batch([tokens[None], positions]), expected["text"])
    del encoder
    keras.backend.clear_session()

    decoder = load("decoder", SIZE)
    _close(decoder.predict_on_batch(latent), expected["vae"])
    del decoder
    keras.backend.clear_session()

    # the VAE encoder, as the tiny check in test_tiny_conversion.py (latents are small)
    encoder_k = load("encoder", SIZE)
    _close(encoder_k.predict_on_batch(image), expected["encoder"], min_scale=0.05)
    del encoder_k
    keras.backend.clear_session()

    unet_k = load("diffusion_model", SIZE)
    t_emb = timestep_embedding(timestep)[None]
    _close(unet_k.predict_on_batch([latent, t_emb, context]), expected["unet"])


@pytest.mark.usefixtures("remove_tmp_path")
def test_sd21_diffusers_folder_converts_to_equivalent_keras_v2_networks(tmp_path):
    import json

    import keras

    folder = tmp_path / "sd21"
    rng = np.random.default_rng(1)
    tokens = np.concatenate([[49406], rng.integers(0, 49406, 20), [49407], [0] * 55])
    tokens = tokens.astype(np.int32)
    latent = rng.standard_normal((1, SIZE // 8, SIZE // 8, 4)).astype(np.float32)
    context = rng.standard_normal((1, 77, 1024)).astype(np.float32)
    timestep = 421.0
    expected = {}

    with torch.no_grad():
        text = architectures.text_encoder("sd21")
        architectures.perturb(text, 4)
        text.save_pretrained(folder / "text_encoder")
        ids = torch.from_numpy(tokens[None].astype(np.int64))
        expected["text"] = text(input_ids=ids).last_hidden_state.numpy()
        del text
        _release()

        unet = architectures.unet("sd21", sample_size=96)  # 768-v; weights do not depend on it
        architectures.perturb(unet, 5)
        unet.save_pretrained(folder / "unet")
        sample = torch.from_numpy(latent.transpose(0, 3, 1, 2).copy())
        pred = unet(sample, timestep, encoder_hidden_states=torch.from_numpy(context)).sample
        expected["unet"] = pred.numpy().transpose(0, 2, 3, 1)
        del unet, pred
        _release()

        vae = architectures.vae(sample_size=768)
        architectures.perturb(vae, 6)
        vae.save_pretrained(folder / "vae")
        del vae
        _release()
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text(
        json.dumps({"_class_name": "DDIMScheduler", "prediction_type": "v_prediction"})
    )

    converted = convert.convert_checkpoint(folder)
    shutil.rmtree(folder)
    assert converted.describe() == {
        "family": "sd-v2",
        "prediction_type": "v_prediction",
        "default_size": 768,
    }
    assert converted.layout == "diffusers"
    out = convert.save_converted(converted, tmp_path / "kcv")  # builds the V2 networks
    del converted
    _release()
    assert sorted(p.name for p in out.iterdir()) == sorted(convert.FILENAMES.values())

    from sdgen.catalog import get_model_spec
    from sdgen.families import family_of
    from sdgen.networks.h5 import load_weights

    spec = dataclasses.replace(get_model_spec("sd-v1.4"), family="sd-v2")
    encoder = family_of(spec).build("text_encoder", spec, SIZE, SIZE)
    load_weights(encoder, out / convert.FILENAMES["text_encoder"])
    positions = np.arange(77, dtype=np.int32)[None]
    _close(encoder.predict_on_batch([tokens[None], positions]), expected["text"])
    del encoder
    keras.backend.clear_session()
    _release()

    unet_k = family_of(spec).build("diffusion_model", spec, SIZE, SIZE)
    load_weights(unet_k, out / convert.FILENAMES["diffusion_model"])
    t_emb = timestep_embedding(timestep)[None]
    _close(unet_k.predict_on_batch([latent, t_emb, context]), expected["unet"])


def test_single_file_names_match_diffusers_converter():
    """Our CompVis names, renamed by diffusers' own LDM converter, give our diffusers names."""
    from diffusers.loaders import single_file_utils as sfu

    params = [p for make in convert.PARAMS.values() for p in make()]
    # Zero-cost stand-ins of each tensor's torch shape, tagged by identity.
    ldm = {}
    expected = {}
    for p in params:
        if p.kind == "dense":
            shape = p.shape[::-1]
        elif p.kind == "conv":
            shape = (p.shape[3], p.shape[2], p.shape[0], p.shape[1])
        else:
            shape = p.shape
        array = np.broadcast_to(np.float32(0), shape)
        ldm[p.ldm] = array
        expected[p.diffusers] = array

    unet_config = {"layers_per_block": 2}
    vae_config = {
        "down_block_types": ("DownEncoderBlock2D",) * 4,
        "up_block_types": ("UpDecoderBlock2D",) * 4,
    }
    converted = {
        "unet." + k: v for k, v in sfu.convert_ldm_unet_checkpoint(ldm, unet_config).items()
    }
    converted.update(
        {"vae." + k: v for k, v in sfu.convert_ldm_vae_checkpoint(ldm, vae_config).items()}
    )
    converted.update(
        {
            "text_encoder." + k: v
            for k, v in sfu.convert_ldm_clip_checkpoint(ldm).items()
            if "position_ids" not in k
        }
    )
    assert sorted(converted) == sorted(expected)
    for key, array in expected.items():
        got = converted[key]
        assert got is array or got.shape == array.shape[:2] or got.base is array, key


def test_sd2_single_file_names_match_diffusers_converter():
    """SD 2.x: our CompVis U-Net and OpenCLIP names, renamed by diffusers' converters,
    give our diffusers names, and the fused in_proj splits into q, k, v in the same
    order (each row of a stand-in holds its row index)."""
    from diffusers.loaders import single_file_utils as sfu

    family = convert.PARAMS_BY_FAMILY["sd-v2"]
    params = family["text_encoder"]() + family["diffusion_model"]()
    ldm, expected = {}, {}
    for p in params:
        if p.kind == "dense":
            shape = p.shape[::-1]
        elif p.kind == "conv":
            shape = (p.shape[3], p.shape[2], p.shape[0], p.shape[1])
        else:
            shape = p.shape
        if p.ldm_part is not None:
            rows = shape[0] * p.ldm_part[1]
            index = torch.arange(rows, dtype=torch.float32)
            ldm[p.ldm] = index.reshape(rows, *([1] * (len(shape) - 1))).expand(rows, *shape[1:])
        else:
            ldm[p.ldm] = torch.zeros(1).expand(*shape) if shape else torch.zeros(())
        expected[p.diffusers] = p
    ldm["cond_stage_model.model.text_projection"] = torch.zeros(1).expand(1024, 1024)

    unet_config = {"layers_per_block": 2}
    unet_ldm = {k: v for k, v in ldm.items() if k.startswith("model.diffusion_model.")}
    converted = {
        "unet." + k: v for k, v in sfu.convert_ldm_unet_checkpoint(unet_ldm, unet_config).items()
    }
    text = sfu.convert_open_clip_checkpoint(None, ldm)
    text.pop("text_projection.weight", None)  # diffusers ignores it for SD 2 too
    converted.update({"text_encoder." + k: v for k, v in text.items()})
    assert sorted(converted) == sorted(expected)
    for key, param in expected.items():
        theirs = converted[key]
        if param.ldm_part is None:
            assert theirs.shape == ldm[param.ldm].shape, key
            continue
        # What diffusers loads, put in keras layout, is what we convert the fused tensor to.
        ours = convert.to_keras(param.ldm, ldm[param.ldm].numpy(), param)
        keras_theirs = convert.to_keras(key, theirs.numpy(), param)
        np.testing.assert_array_equal(ours, keras_theirs, err_msg=key)
        assert np.unique(ours).size == ours.shape[-1], key  # one row index per output
