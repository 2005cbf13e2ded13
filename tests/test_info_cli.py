"""`sdgen info`: the parameters of a real tiny-model image, an A1111 PNG, and errors."""

from __future__ import annotations

import json

from conftest import FAST, one_line_error, png_files
from PIL import Image, PngImagePlugin

A1111 = (
    "a cat\nNegative prompt: blurry\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, "
    "Seed: 42, Size: 512x512, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly"
)


def test_info_round_trips_a_tiny_generation(run_cli, hermetic):
    result = run_cli("a red cube", *FAST, "--seed", "123", "--negative-prompt", "blurry")
    assert result.exit_code == 0, result.stderr
    [path] = png_files(hermetic / "outputs")
    plain = run_cli("info", path)
    assert plain.exit_code == 0, plain.stderr
    lines = plain.stdout.splitlines()
    assert lines[:2] == ["Prompt: a red cube", "Negative prompt: blurry"]
    assert lines[2:5] == ["Steps: 2", "Sampler: DPM++ 2M Karras", "CFG scale: 7.5"]
    assert "Seed: 123" in lines
    data = json.loads(run_cli("info", path, "--json").stdout)
    assert data["prompt"] == "a red cube" and data["negative_prompt"] == "blurry"
    settings = data["settings"]
    assert settings["Seed"] == 123 and settings["Steps"] == 2
    assert settings["Sampler"] == "DPM++ 2M Karras" and settings["CFG scale"] == 7.5
    assert settings["Size"] == "64x64"


def test_info_reads_an_a1111_png(run_cli, hermetic):
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", A1111)
    Image.new("RGB", (8, 8)).save(hermetic / "a.png", pnginfo=info)
    plain = run_cli("info", hermetic / "a.png")
    assert plain.stdout.splitlines() == [
        "Prompt: a cat",
        "Negative prompt: blurry",
        "Steps: 20",
        "Sampler: DPM++ 2M Karras",
        "CFG scale: 7",
        "Seed: 42",
        "Size: 512x512",
        "Model hash: 6ce0161689",
        "Model: v1-5-pruned-emaonly",
    ]
    data = json.loads(run_cli("info", hermetic / "a.png", "--json").stdout)
    assert list(data["settings"]) == [
        "Steps", "Sampler", "CFG scale", "Seed", "Size", "Model hash", "Model"
    ]  # fmt: skip
    assert data["settings"]["Model hash"] == "6ce0161689" and data["settings"]["Seed"] == 42


def test_a_png_without_parameters_and_a_missing_file_exit_2(run_cli, hermetic):
    Image.new("RGB", (8, 8)).save(hermetic / "bare.png")
    one_line_error(run_cli("info", hermetic / "bare.png"), "holds no generation parameters")
    one_line_error(run_cli("info", hermetic / "nope.png"), "nope.png")
