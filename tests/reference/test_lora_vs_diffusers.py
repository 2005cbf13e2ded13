"""sdgen's LoRA merging against diffusers' and PEFT's, on networks with random weights.

Random LoRA files with the real key names are made here: kohya's with diffusers block
names, kohya's with LDM block names (each with LoCon 3x3 convolutions and 1x1 ones), a
diffusers/PEFT one with ``lora_adapter_metadata``, and one with the older
attention-processor names. diffusers loads each (``load_lora_weights``, then
``fuse_lora(lora_scale=m)``) into its own networks; sdgen converts the same base networks
to its keras layouts and adds ``lora_deltas``. The fused weights, the text states and the
U-Net prediction must agree within 1e-4. LoHa and LoKr, which diffusers does not load,
are checked against PEFT's own LoHa/LoKr layers (the adapter live in the forward pass).

At the tiny widths of test_tiny_conversion.py these run in seconds; the ``full_size``
variant does the kohya and PEFT checks at SD 1.5's widths (random weights, about 12 GB:
scripts/test.sh runs each in a process of its own). LoHa and LoKr are checked at tiny
widths only: their formulas do not depend on the widths, and two more full-size
processes would lengthen CI for no new fact.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from sdgen import convert
from sdgen.adapters.lora import apply_deltas_to_keras, lora_deltas, read_lora
from sdgen.networks import layouts
from sdgen.networks.layouts import Attention
from sdgen.pipeline import timestep_embedding

from . import sd_architectures as architectures
from .conftest import require

torch = require("torch")
diffusers = require("diffusers")
transformers = require("transformers")
peft = require("peft")

SIZE = 64  # pixels
LIMIT = 1e-4
RANK = 4
MULTIPLIER = 0.7
TINY = convert.Widths(
    text=32, text_layers=2, unet=(32, 64, 128, 128), context=32, decoder=(64, 64, 32, 32)
)

#: Text-encoder modules (kohya names them after transformers' CLIP in both layouts).
TEXT_MODULES = (
    "text_model.encoder.layers.0.self_attn.q_proj",
    "text_model.encoder.layers.1.self_attn.out_proj",
    "text_model.encoder.layers.1.mlp.fc1",
)
#: U-Net modules: (diffusers path, the same module's LDM path).
UNET_MODULES = (
    (
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
        "input_blocks.1.1.transformer_blocks.0.attn1.to_q",
    ),
    (
        "down_blocks.1.attentions.1.transformer_blocks.0.attn2.to_k",
        "input_blocks.5.1.transformer_blocks.0.attn2.to_k",
    ),
    (
        "mid_block.attentions.0.transformer_blocks.0.attn2.to_out.0",
        "middle_block.1.transformer_blocks.0.attn2.to_out.0",
    ),
    (
        "up_blocks.1.attentions.2.transformer_blocks.0.ff.net.0.proj",
        "output_blocks.5.1.transformer_blocks.0.ff.net.0.proj",
    ),
    ("down_blocks.0.attentions.1.proj_in", "input_blocks.2.1.proj_in"),  # a 1x1 conv
    ("up_blocks.2.attentions.0.proj_out", "output_blocks.6.1.proj_out"),
    ("down_blocks.0.resnets.0.conv1", "input_blocks.1.0.in_layers.2"),  # LoCon 3x3
    ("up_blocks.3.resnets.1.conv2", "output_blocks.10.0.out_layers.3"),
    ("down_blocks.1.resnets.0.conv_shortcut", "input_blocks.4.0.skip_connection"),
    # not output_blocks.1 beside output_blocks.10: diffusers' LDM renaming finds a block's
    # keys by substring, so it takes output_blocks_10_* for output_blocks_1 as well
    ("up_blocks.0.resnets.2.time_emb_proj", "output_blocks.2.0.emb_layers.1"),
)


def build_torch(full: bool, seed: int):
    """diffusers/transformers text encoder and U-Net with random weights."""
    if full:
        text, unet = architectures.text_encoder("sd15"), architectures.unet("sd15", SIZE // 8)
    else:
        from .test_tiny_conversion import diffusers_networks

        text, unet, _ = diffusers_networks(v2=False, seed=seed)
        return text, unet
    architectures.perturb(text, seed)
    architectures.perturb(unet, seed + 1)
    return text, unet


def build_keras(text, unet, full: bool):
    """sdgen's keras text encoder and U-Net with the torch networks' weights, converted
    by sdgen's own tables (the conversion itself is tested by test_tiny_conversion.py)."""
    widths = convert.SD1_WIDTHS if full else TINY
    tensors = {}
    for key, value in text.state_dict().items():
        key = key if key.startswith("text_model.") else "text_model." + key
        tensors["text_encoder." + key] = value.detach().numpy()
    for key, value in unet.state_dict().items():
        tensors["unet." + key] = value.detach().numpy()
    tables = convert.family_tables("sd-v1", widths)
    params = {role: tables[role] for role in ("text_encoder", "diffusion_model")}
    weights = convert.map_weights(tensors, "diffusers", params=params)
    encoder = layouts.text_encoder(widths, 12 if full else 2, "quick_gelu")
    encoder.set_weights(weights["text_encoder"])
    model = layouts.diffusion_model(widths, Attention(heads=8), SIZE, SIZE)
    model.set_weights(weights["diffusion_model"])
    return {"text_encoder": encoder, "diffusion_model": model}


def submodule(network, path: str):
    """``network``'s module at ``path``; transformers 5's ``CLIPTextModel`` has no
    ``text_model`` level, which the file formats name all the same."""
    try:
        return network.get_submodule(path)
    except AttributeError:
        return network.get_submodule(path.removeprefix("text_model."))


def random_lora(text, unet, kind: str, seed: int) -> tuple[dict, dict]:
    """``(tensors, metadata)`` of a LoRA file of ``kind`` for the modules above, its
    factors drawn so each change is about a tenth of the weight it changes."""
    rng = np.random.default_rng(seed)
    tensors, metadata = {}, {}
    modules = [("text_encoder", path, path) for path in TEXT_MODULES]
    modules += [("unet", diffusers_path, ldm) for diffusers_path, ldm in UNET_MODULES]
    targets = {"text_encoder": [], "unet": []}
    for network, path, ldm_path in modules:
        weight = submodule(text if network == "text_encoder" else unet, path).weight
        out, inp, *kernel = weight.shape
        scale = 0.3 * float(weight.detach().abs().mean()) ** 0.5 / RANK**0.25
        down = scale * rng.standard_normal((RANK, inp, *kernel))
        up = scale * rng.standard_normal((out, RANK, *((1, 1) if kernel else ())))
        down, up = down.astype(np.float32), up.astype(np.float32)
        alpha = np.array(2.0 if network == "text_encoder" else 8.0, np.float32)
        if kind.startswith("kohya"):
            prefix = "lora_te_" if network == "text_encoder" else "lora_unet_"
            name = prefix + (ldm_path if kind == "kohya-ldm" else path).replace(".", "_")
            down, up = (down, up) if kind != "kohya-no-alpha" else (down / 2, up / 2)
            tensors |= {f"{name}.lora_down.weight": down, f"{name}.lora_up.weight": up}
            if kind != "kohya-no-alpha":  # without alpha diffusers gives lora_alpha = r
                tensors[f"{name}.alpha"] = alpha
        elif kind == "peft":
            if network == "text_encoder" and not hasattr(text, "text_model"):
                path = path.removeprefix("text_model.")  # as transformers 5 names it
            tensors[f"{network}.{path}.lora_A.weight"] = down
            tensors[f"{network}.{path}.lora_B.weight"] = up
            targets[network].append(path)
        elif kind == "processor":  # diffusers' older attention-processor names, no alpha
            if network == "text_encoder":
                base = f"text_encoder.{path}.lora_linear_layer"
            elif ".attn" in path:
                head, projection = path.rsplit(".attn", 1)[0], path.split(".attn", 1)[1]
                number, projection = projection.split(".", 1)
                projection = projection.removesuffix(".0")
                base = f"unet.{head}.attn{number}.processor.{projection}_lora"
            else:
                continue  # the attention processors held attention projections only
            tensors |= {f"{base}.down.weight": down, f"{base}.up.weight": up}
    if kind == "peft":
        config = {}
        for network, alpha in (("text_encoder", 2), ("unet", 8)):
            config |= {f"{network}.r": RANK, f"{network}.lora_alpha": alpha}
            config[f"{network}.target_modules"] = targets[network]
        metadata["lora_adapter_metadata"] = json.dumps(config)
    return tensors, metadata


def save(path, tensors, metadata):
    import safetensors.numpy

    safetensors.numpy.save_file(tensors, str(path), metadata=metadata or None)
    return path


def inputs(full: bool):
    width = 768 if full else TINY.context
    rng = np.random.default_rng(0)
    tokens = np.concatenate([[49406], rng.integers(0, 49406, 12), [49407] * 64])
    tokens = tokens.astype(np.int32)[None]
    latent = rng.standard_normal((1, SIZE // 8, SIZE // 8, 4)).astype(np.float32)
    context = rng.standard_normal((1, 77, width)).astype(np.float32)
    return tokens, latent, context, 501.0


def torch_outputs(text, unet, full):
    tokens, latent, context, timestep = inputs(full)
    with torch.no_grad():
        states = text(input_ids=torch.from_numpy(tokens.astype(np.int64))).last_hidden_state
        sample = unet(
            torch.from_numpy(latent.transpose(0, 3, 1, 2).copy()),
            timestep,
            encoder_hidden_states=torch.from_numpy(context),
        ).sample
    return states.numpy(), sample.numpy().transpose(0, 2, 3, 1)


def keras_outputs(networks, full):
    tokens, latent, context, timestep = inputs(full)
    positions = np.arange(77, dtype=np.int32)[None]
    states = networks["text_encoder"].predict_on_batch([tokens, positions])
    t_emb = timestep_embedding(timestep, dim=(320 if full else TINY.unet[0]))[None]
    return states, networks["diffusion_model"].predict_on_batch([latent, t_emb, context])


def close(got, expected, what):
    error = float(np.abs(np.asarray(got, np.float64) - expected).max())
    print(f"{what}: max abs error {error:.3g}")
    assert np.shape(got) == np.shape(expected)
    assert error <= LIMIT, f"{what}: max abs error {error:.3g}"


def check_against_diffusers(tmp_path, kind, full):
    text, unet = build_torch(full, seed=11)
    networks = build_keras(text, unet, full)
    base = torch_outputs(text, unet, full)
    tensors, metadata = random_lora(text, unet, kind, seed=5)
    path = save(tmp_path / f"{kind}.safetensors", tensors, metadata)

    pipe = diffusers.StableDiffusionPipeline(
        vae=diffusers.AutoencoderKL(block_out_channels=(32,), latent_channels=4),
        text_encoder=text,
        tokenizer=None,
        unet=unet,
        scheduler=diffusers.DDIMScheduler(steps_offset=1, clip_sample=False),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    # with the U-Net's config, diffusers maps LDM block names (_maybe_map_sgm_blocks_to_diffusers)
    pipe.load_lora_weights(str(path), unet_config=unet.config)
    pipe.fuse_lora(lora_scale=MULTIPLIER, components=["unet", "text_encoder"])
    expected = torch_outputs(text, unet, full)
    # a LoRA that changes what the networks compute, or this would prove nothing
    assert np.abs(expected[0] - base[0]).max() > 1e-2
    assert np.abs(expected[1] - base[1]).max() > 1e-2

    lora = read_lora(path)
    deltas = lora_deltas([(lora, MULTIPLIER, MULTIPLIER)], "sd-v1", None if full else TINY)
    modules = len(TEXT_MODULES) + len(UNET_MODULES)
    assert len(deltas) == (modules if kind != "processor" else len(TEXT_MODULES) + 3)
    apply_deltas_to_keras(networks, deltas, {})
    got = keras_outputs(networks, full)
    close(got[0], expected[0], "text states")
    close(got[1], expected[1], "U-Net prediction")


@pytest.mark.parametrize(
    "kind", ["kohya-diffusers", "kohya-ldm", "kohya-no-alpha", "peft", "processor"]
)
def test_tiny_lora_merges_as_diffusers_fuses_it(tmp_path, kind):
    check_against_diffusers(tmp_path, kind, full=False)


@pytest.mark.slow
@pytest.mark.full_size
@pytest.mark.parametrize("kind", ["kohya-ldm", "peft"])
def test_full_size_lora_merges_as_diffusers_fuses_it(tmp_path, kind):
    check_against_diffusers(tmp_path, kind, full=True)


# -- LoHa and LoKr against PEFT's layers ------------------------------------------------------

#: The U-Net modules PEFT wraps: a linear layer and a 3x3 convolution of each kind.
LYCORIS_TARGETS = (
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
    "down_blocks.1.attentions.0.transformer_blocks.0.ff.net.2",
    "down_blocks.0.resnets.0.conv1",
    "up_blocks.3.resnets.0.conv2",
)


def check_against_peft(tmp_path, algorithm: str, tucker: bool, full: bool):
    text, unet = build_torch(full, seed=21)
    networks = build_keras(text, unet, full)
    _, base = torch_outputs(text, unet, full)
    if algorithm == "loha":
        config = peft.LoHaConfig(
            r=RANK, alpha=6, target_modules=list(LYCORIS_TARGETS), use_effective_conv2d=tucker
        )
    else:
        config = peft.LoKrConfig(
            r=2,
            alpha=3,
            target_modules=list(LYCORIS_TARGETS),
            use_effective_conv2d=tucker,
            decompose_both=True,
        )
    peft.inject_adapter_in_model(config, unet)
    rng = np.random.default_rng(4)
    tensors = {}
    with torch.no_grad():
        for path in LYCORIS_TARGETS:
            layer = unet.get_submodule(path)
            name = "lora_unet_" + path.replace(".", "_")
            factors = {n: p for n, p in layer.named_parameters() if n.endswith(".default")}
            for part, param in factors.items():
                std = 0.5 if "_t" in part.split(".")[0][-3:] else 0.35
                param.copy_(torch.from_numpy(std * rng.standard_normal(param.shape)))
                tensors[f"{name}.{part.removesuffix('.default')}"] = param.numpy().astype(
                    np.float32
                )
            rank = layer.r["default"]
            tensors[f"{name}.alpha"] = np.array(layer.scaling["default"] * rank, np.float32)
    _, expected = torch_outputs(text, unet, full)  # PEFT's layers live in the forward pass
    assert np.abs(expected - base).max() > 1e-2
    cores = [key for key in tensors if key.endswith(("hada_t1", "hada_t2", "lokr_t2"))]
    assert bool(cores) == tucker

    lora = read_lora(save(tmp_path / f"{algorithm}.safetensors", tensors, {}))
    assert lora.format == algorithm
    deltas = lora_deltas([(lora, 1.0, 1.0)], "sd-v1", None if full else TINY)
    assert len(deltas) == len(LYCORIS_TARGETS)
    apply_deltas_to_keras(networks, deltas, {})
    _, got = keras_outputs(networks, full)
    close(got, expected, f"U-Net prediction with {algorithm}")


@pytest.mark.parametrize("tucker", [False, True], ids=["plain", "tucker"])
@pytest.mark.parametrize("algorithm", ["loha", "lokr"])
def test_tiny_lycoris_merges_as_peft_computes_it(tmp_path, algorithm, tucker):
    check_against_peft(tmp_path, algorithm, tucker, full=False)
