"""A user's path: a full-size SD 1.5 diffusers folder -> `sdgen import` -> `sdgen models`
-> generate with the imported model, and `--checkpoint` converting once and reusing."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from .conftest import require

torch = require("torch")
diffusers = require("diffusers")
transformers = require("transformers")


def sdgen(*args, timeout=900):
    command = [sys.executable, "-m", "sdgen", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def build_sd15_folder(folder):
    """SD 1.5's architecture with seeded random weights, saved in fp16 (about 2 GB)."""
    torch.manual_seed(0)
    with torch.no_grad():
        text = transformers.CLIPTextModel(
            transformers.CLIPTextConfig(
                hidden_size=768,
                intermediate_size=3072,
                num_hidden_layers=12,
                num_attention_heads=12,
                max_position_embeddings=77,
                hidden_act="quick_gelu",
            )
        )
        text.half().save_pretrained(folder / "text_encoder")
        del text
        unet = diffusers.UNet2DConditionModel(cross_attention_dim=768, attention_head_dim=8)
        unet.half().save_pretrained(folder / "unet")
        del unet
        vae = diffusers.AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=2,
        )
        vae.half().save_pretrained(folder / "vae")
        del vae


@pytest.mark.slow
def test_import_list_generate_and_checkpoint(hermetic):
    folder = hermetic / "sd15"
    build_sd15_folder(folder)

    result = sdgen("import", folder, "--name", "my-sd15")
    assert result.returncode == 0, result.stderr
    assert "imported my-sd15" in result.stderr and "sd-v1, epsilon, 512 px" in result.stderr
    again = sdgen("import", folder, "--name", "my-sd15")
    assert again.returncode == 2 and "already exists" in again.stderr

    models = json.loads(sdgen("models", "--json").stdout)
    [mine] = [row for row in models if row["name"] == "my-sd15"]
    assert (mine["family"], mine["default_size"], mine["imported"]) == ("sd-v1", 512, True)

    small = ["--width", "64", "--height", "64", "--steps", "2", "--seed", "1"]
    result = sdgen(
        "a red fox", "--model", "my-sd15", *small, "--sampler", "euler", "--out", "a.png"
    )
    assert result.returncode == 0, result.stderr
    with Image.open(hermetic / "a.png") as image:
        pixels = np.asarray(image)
        assert pixels.shape == (64, 64, 3) and "Model: my-sd15" in image.text["parameters"]

    result = sdgen(
        "a red fox", "--checkpoint", folder, *small, "--sampler", "euler", "--out", "b.png"
    )
    assert result.returncode == 0, result.stderr
    with Image.open(hermetic / "b.png") as image:  # the same weights, so the same image
        assert np.array_equal(np.asarray(image), pixels)
    cached = [row["name"] for row in json.loads(sdgen("models", "--json").stdout)]
    assert len([name for name in cached if name.startswith("ckpt-")]) == 1
