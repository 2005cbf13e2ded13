"""A user's path: a full-size SD 1.5 diffusers folder -> `sdgen import` -> `sdgen models`
-> generate with the imported model, and `--checkpoint` converting once and reusing."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from . import sd_architectures as architectures
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
        for name, network in [
            ("text_encoder", lambda: architectures.text_encoder("sd15")),
            ("unet", lambda: architectures.unet("sd15")),
            ("vae", architectures.vae),
        ]:
            network().half().save_pretrained(folder / name)


@pytest.mark.slow
@pytest.mark.full_size
def test_import_list_generate_and_checkpoint(hermetic):
    folder = hermetic / "sd15"
    build_sd15_folder(folder)

    result = sdgen("import", folder, "--name", "my-sd15")
    assert result.returncode == 0, result.stderr
    assert "imported my-sd15" in result.stderr and "sd-v1, epsilon, 512 px" in result.stderr
    again = sdgen("import", folder, "--name", "my-sd15")
    assert again.returncode == 2 and "already exists" in again.stderr

    models = json.loads(sdgen("models", "--json").stdout)["models"]
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
    cached = [row["name"] for row in json.loads(sdgen("models", "--json").stdout)["models"]]
    assert len([name for name in cached if name.startswith("ckpt-")]) == 1
