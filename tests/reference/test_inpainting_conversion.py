"""A 9-channel (inpainting) U-Net from diffusers, imported by ``sdgen import``, predicts
what diffusers predicts, on both runtimes.

At the tiny family's widths (so the import detects ``tiny-inpainting`` in seconds, as
a real SD 1.5 inpainting file is detected ``sd-v1-inpainting``), diffusers' text
encoder, ``UNet2DConditionModel(in_channels=9)`` and VAE get random weights (every
parameter perturbed) and are saved twice: as a diffusers folder, and as an LDM single
file. The single file's U-Net names come from diffusers' own LDM converter
(``convert_ldm_unet_checkpoint``, run backwards on tagged stand-ins), not from sdgen's
tables; its text encoder and VAE names from sdgen's tables, which
test_checkpoints_vs_diffusers.py checks against diffusers' converters. Each is imported
with ``sdgen import``, loaded on TensorFlow and on OpenVINO, and the U-Net's noise
prediction on the same 9-channel input must equal diffusers' within 1e-4 max abs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from sdgen import convert
from sdgen.families import FAMILIES
from sdgen.pipeline import load_pipeline, timestep_embedding
from sdgen.runtimes.signature import NetworkSignature

from . import sd_architectures as architectures
from .conftest import require

torch = require("torch")
diffusers = require("diffusers")
transformers = require("transformers")
safetensors_torch = require("safetensors.torch")

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("openvino-cache")]

FAMILY = FAMILIES["tiny-inpainting"]
WIDTHS = FAMILY.widths
SIZE = 64  # pixels: 8x8 latents
LIMIT = 1e-4


def diffusers_networks(seed: int):
    heads = (FAMILY.text_heads, FAMILY.attention.heads)
    return architectures.small_networks(WIDTHS, *heads, seed, SIZE, in_channels=9)


def _torch_shape(param) -> tuple[int, ...]:
    if param.kind == "dense":
        return param.shape[::-1]
    if param.kind == "conv":
        return (param.shape[3], param.shape[2], param.shape[0], param.shape[1])
    return param.shape


def unet_ldm_names() -> dict[str, str]:
    """diffusers' name of each LDM U-Net tensor, as diffusers' LDM converter renames it:
    each stand-in is filled with its own index, so its converted copy tells which it was."""
    from diffusers.loaders import single_file_utils as sfu

    params = convert.family_tables("tiny-inpainting")["diffusion_model"]()
    ldm = {p.ldm: torch.full(_torch_shape(p), float(i)) for i, p in enumerate(params)}
    renamed = sfu.convert_ldm_unet_checkpoint(ldm, {"layers_per_block": 2})
    assert len(renamed) == len(ldm)
    return {params[int(t.flatten()[0])].ldm: key for key, t in renamed.items()}


def save_both(tmp_path, seed=11):
    """The networks as a diffusers folder and as an LDM single file; the U-Net."""
    text, unet, vae = diffusers_networks(seed)
    folder = tmp_path / "inpainting-diffusers"
    text.save_pretrained(folder / "text_encoder")
    unet.save_pretrained(folder / "unet")
    vae.save_pretrained(folder / "vae")

    states = {"text_encoder.": text.state_dict(), "unet.": unet.state_dict()}
    states["vae."] = vae.state_dict()
    tensors = {}
    for name, diffusers_name in unet_ldm_names().items():
        tensors[name] = states["unet."][diffusers_name]
    for role in ("text_encoder", "decoder"):
        for param in convert.family_tables("tiny-inpainting")[role]():
            prefix, _, rest = param.diffusers.partition(".")
            state = states[prefix + "."]
            if rest not in state:  # transformers 5's CLIPTextModel drops "text_model."
                rest = rest.removeprefix("text_model.")
            value = state[rest]
            tensors[param.ldm] = value.reshape(_torch_shape(param))
    single = tmp_path / "inpainting.safetensors"
    safetensors_torch.save_file({k: v.contiguous() for k, v in tensors.items()}, str(single))
    return folder, single, unet


@pytest.mark.parametrize("layout", ["diffusers", "ldm"])
def test_an_imported_9_channel_u_net_predicts_what_diffusers_does(
    tmp_path, run_cli, layout, monkeypatch
):
    folder, single, unet = save_both(tmp_path)
    source = folder if layout == "diffusers" else single
    result = run_cli("import", source, "--name", "inp")
    assert result.exit_code == 0, result.stderr
    (row,) = [r for r in json.loads(run_cli("models", "--json").stdout)["models"] if r["imported"]]
    assert row["family"] == "tiny-inpainting"

    rng = np.random.default_rng(0)
    latent = rng.standard_normal((1, SIZE // 8, SIZE // 8, 9)).astype(np.float32)
    context = rng.standard_normal((1, 77, WIDTHS.context)).astype(np.float32)
    timestep = 321.0
    with torch.no_grad():
        expected = (
            unet(
                torch.from_numpy(latent.transpose(0, 3, 1, 2).copy()),
                timestep,
                encoder_hidden_states=torch.from_numpy(context),
            )
            .sample.numpy()
            .transpose(0, 2, 3, 1)
        )
    assert np.abs(expected).max() > 0.5  # a working network's output
    t_emb = timestep_embedding(timestep, dim=FAMILY.timestep_embedding_dim)[None]
    signature = NetworkSignature(SIZE, SIZE, 77, 9)
    errors = {}
    for runtime in ("tensorflow", "openvino"):
        pipeline = load_pipeline("inp", width=SIZE, height=SIZE, runtime=runtime)
        got = pipeline.backend.networks(signature).denoise(latent, t_emb, context)
        assert got.shape == expected.shape
        errors[runtime] = float(np.abs(got - expected).max())
    print(layout, errors)
    assert max(errors.values()) <= LIMIT, errors
