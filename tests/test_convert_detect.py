"""Recognising checkpoints (sdgen.convert.detect): family, layout, the kinds sdgen
refuses, prediction type and default size. Detection works on zero-cost stand-ins
(``np.broadcast_to``) of full-size tensors."""

from __future__ import annotations

import numpy as np
import pytest

from sdgen.convert import (
    CheckpointError,
    NotACheckpointError,
    UnsupportedCheckpointError,
    describe,
    detect,
    read_checkpoint,
)
from sdgen.convert.readers import DIFFUSERS_FILES

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


@pytest.mark.parametrize(
    ("context", "family"), [(768, "sd-v1-inpainting"), (1024, "sd-v2-inpainting")]
)
def test_detects_9_channel_u_nets_as_the_inpainting_families(context, family):
    assert detect(_detection_dict(channels=9, context=context)) == (family, "ldm")
    diffusers = {
        "unet.conv_in.weight": _zeros((320, 9, 3, 3)),
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight": _zeros(
            (320, context)
        ),
    }
    assert detect(diffusers) == (family, "diffusers")


def test_unknown_context_width_is_named():
    with pytest.raises(UnsupportedCheckpointError, match="context width 512"):
        detect(_detection_dict(context=512))


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
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


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (_detection_dict(), ("sd-v1", "epsilon", 512)),
        ({**_detection_dict(), "global_step": 470000}, ("sd-v1", "epsilon", 512)),
        (_detection_dict(context=1024), ("sd-v2", "v_prediction", 768)),
        ({**_detection_dict(context=1024), "global_step": 875000}, ("sd-v2", "epsilon", 512)),
        ({**_detection_dict(context=1024), "global_step": 110000}, ("sd-v2", "v_prediction", 768)),
        (_detection_dict(channels=9), ("sd-v1-inpainting", "epsilon", 512)),
        # diffusers' single-file loader: SD 2 inpainting is epsilon at 512, whatever the step
        (_detection_dict(channels=9, context=1024), ("sd-v2-inpainting", "epsilon", 512)),
        (
            {**_detection_dict(channels=9, context=1024), "global_step": 200000},
            ("sd-v2-inpainting", "epsilon", 512),
        ),
    ],
)
def test_describe_state(state, expected):
    info = describe(state)
    assert info == dict(zip(("family", "prediction_type", "default_size"), expected, strict=True))


@pytest.mark.parametrize(
    ("step", "prediction", "size"), [(875000, "epsilon", 512), (140000, "v_prediction", 768)]
)
def test_describe_sd2_ckpt_by_global_step(tmp_path, step, prediction, size):
    torch = pytest.importorskip("torch")
    path = tmp_path / "v2.ckpt"
    state = {k: torch.zeros(v.shape) for k, v in _detection_dict(context=1024).items()}
    torch.save({"state_dict": state, "global_step": step, "epoch": 3}, path)
    assert describe(path) == {
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
    assert describe(path)["prediction_type"] == "v_prediction"
    assert describe(path)["default_size"] == 768


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
        save_file(tensors, str(folder / component / DIFFUSERS_FILES[component][0]))
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
    info = describe(folder)
    assert info == dict(zip(("family", "prediction_type", "default_size"), expected, strict=True))


def test_describe_refuses_unknown_prediction_types(tmp_path):
    folder = _detection_folder(tmp_path / "m", 1024, {"prediction_type": "sample"})
    with pytest.raises(UnsupportedCheckpointError, match="sample"):
        describe(folder)


def test_describe_reads_only_safetensors_headers(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "v1.safetensors"
    tensors = {k: np.ones(v.shape, np.float32) for k, v in _detection_dict().items()}
    save_file(tensors, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])  # the tensor data is never read
    assert describe(path)["family"] == "sd-v1"
    with pytest.raises(CheckpointError, match="could not read"):
        read_checkpoint(path)
