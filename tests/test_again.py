"""`sdgen again IMAGE`: a tiny image made again pixel for pixel, overrides, the
infotexts of AUTOMATIC1111 and stable-diffusion.cpp read into a request, the model found
by its hash, and the one-line errors."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from conftest import FAST, one_line_error, pixels, png_files, tiny_checkpoint
from PIL import Image, PngImagePlugin

from sdgen.again import again_request
from sdgen.batch.identity import infotext
from sdgen.config import GenerationConfig
from sdgen.output.png import read_infotext

#: A txt2img infotext as AUTOMATIC1111 1.10 writes it: "DPM++ 2M" with its schedule type,
#: GPU noise (its default, so no RNG key), a variation seed and a hires pass.
A1111 = (
    "masterpiece, (a red fox:1.2) in the snow, BREAK pine trees\n"
    "Negative prompt: blurry, lowres\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, "
    "Seed: 3141592653, Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, "
    "Clip skip: 2, Variation seed: 12345, Variation seed strength: 0.25, "
    "Seed resize from: 512x512, Denoising strength: 0.55, Hires upscale: 2, "
    "Hires steps: 10, Hires upscaler: Latent, Version: v1.10.1"
)
#: An older A1111 infotext: the sampler label holds the schedule, CPU noise, ENSD.
A1111_OLD = (
    "a lighthouse at night\n"
    "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 512x512, "
    "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, RNG: CPU, ENSD: 31337, "
    "Emphasis: No norm, Version: v1.6.0"
)
#: As stable-diffusion.cpp's get_image_params writes it (examples/common/common.cpp):
#: printf'd floats, the model's file name, its CUDA-like RNG, the scheduler after the
#: sampler, and its own JSON last, unquoted, commas and ": " inside.
SDCPP = (
    "a lovely cat\n"
    "Negative prompt: ugly\n"
    "Steps: 20, CFG scale: 7.000000, Guidance: 3.500000, Eta: inf, Seed: 42, "
    "Size: 512x512, Model: v1-5-pruned-emaonly.safetensors, RNG: cuda, "
    "Sampler: dpm++2m karras, Version: stable-diffusion.cpp, "
    'SDCPP: {"schema":"sdcpp.image.params/v1","mode":"img_gen",'
    '"prompt":"a lovely cat, Style: oil","sample_params":{"steps":20,"eta":null}}'
)
SDCPP_CPU = (
    "a lovely cat\n"
    "Steps: 8, CFG scale: 5.500000, Guidance: 3.500000, Eta: 1.000000, Seed: 7, "
    "Size: 512x512, Model: v1-5-pruned-emaonly.safetensors, RNG: cpu, Sampler: euler_a, "
    "Clip skip: 2, Hires upscale: latent, Hires scale: 2.000000, "
    "Version: stable-diffusion.cpp"
)
SMALL = ["--model", "tiny", "--width", "64", "--height", "64", "--steps", "2"]


def png_with(path, text):
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", text)
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    return path


MADE = [
    "a red cube on a table", *FAST, "--seed", "7", "--negative-prompt", "blurry",
    "--sampler", "euler-a", "--rng", "torch-cpu", "--subseed", "9",
    "--subseed-strength", "0.3", "--guidance-scale", "6",
]  # fmt: skip


def test_again_makes_the_same_image_and_overrides_win(run_cli, hermetic):
    made = run_cli(*MADE, "--out", "first.png")
    assert made.exit_code == 0, made.stderr
    same = run_cli("again", "first.png", "--out", "same.png")
    assert same.exit_code == 0, same.stderr
    assert "ignored" not in same.stderr
    assert np.array_equal(pixels(hermetic / "first.png"), pixels(hermetic / "same.png"))
    assert read_infotext(hermetic / "same.png") == read_infotext(hermetic / "first.png")

    # --seed +1 is the image's seed plus one: what generate makes with --seed 8
    plus = run_cli("again", "first.png", "--seed", "+1", "--cfg", "4", "--out", "plus.png")
    assert plus.exit_code == 0, plus.stderr
    text = read_infotext(hermetic / "plus.png")
    assert "Seed: 8," in text and "CFG scale: 4," in text and "Sampler: Euler a" in text
    direct = [*MADE, "--seed", "8", "--guidance-scale", "4", "--out", "direct.png"]
    assert run_cli(*direct).exit_code == 0
    assert np.array_equal(pixels(hermetic / "plus.png"), pixels(hermetic / "direct.png"))
    assert not np.array_equal(pixels(hermetic / "plus.png"), pixels(hermetic / "same.png"))

    # without --out: into --outdir; a second time it is made again (not skipped as
    # already made), into the same file
    for _ in range(2):
        into = run_cli("again", "first.png", "--steps", "3", "--sampler", "ddim")
        assert into.exit_code == 0, into.stderr
        assert "[1/1] outputs/00000-7-a-red-cube-on-a-table.png" in into.stderr
    [path] = png_files(hermetic / "outputs")
    assert "Steps: 3, Sampler: DDIM," in read_infotext(path)


def test_an_a1111_infotext_becomes_its_request(hermetic):
    again = again_request(png_with(hermetic / "a.png", A1111))
    request = again.request
    assert request.prompt == "masterpiece, (a red fox:1.2) in the snow, BREAK pine trees"
    assert request.model == "sd-v1.5"  # its Model hash is v1-5-pruned-emaonly's sha256
    assert dict(request.settings) == {
        "negative_prompt": "blurry, lowres",
        "steps": 28,
        "sampler": "dpmpp-2m-karras",
        "guidance_scale": 6.5,
        "seed": 3141592653,
        "width": 512,
        "height": 768,
        "clip_skip": 2,
        "subseed": 12345,
        "subseed_strength": 0.25,
        "seed_resize_from": (512, 512),
        "rng": "torch-cuda",  # no RNG key: A1111's default, torch.randn on the GPU
        # its hires pass: Denoising strength is the hires pass's in a txt2img infotext
        "hires": True,
        "hires_scale": 2.0,
        "hires_steps": 10,
        "hires_upscaler": "latent",
        "hires_denoise": 0.55,
    }
    assert again.ignored == ()
    GenerationConfig(prompt=request.prompt, **request.settings)  # valid as it is

    old = again_request(png_with(hermetic / "old.png", A1111_OLD))
    assert old.request.settings["sampler"] == "euler-a"
    assert old.request.settings["rng"] == "torch-cpu"  # RNG: CPU, drawn as A1111 does
    assert old.request.settings["emphasis"] == "no-norm"
    assert old.ignored == ("ENSD (31337)",)  # it shifts an ancestral sampler's noise
    assert again_request(hermetic / "old.png", {"sampler": "euler"}).ignored == ()
    with_ti = A1111_OLD.replace(", Version", ', TI hashes: "EasyNegative: c74b4e810b03", Version')
    ti = again_request(png_with(hermetic / "ti.png", with_ti))
    assert len(ti.ignored) == 2 and ti.ignored[1].startswith("TI hashes (EasyNegative: not in")


def test_a_stable_diffusion_cpp_infotext_becomes_its_request(hermetic):
    again = again_request(png_with(hermetic / "s.png", SDCPP))
    request = again.request
    assert (request.prompt, request.model) == ("a lovely cat", "sd-v1.5")  # by file name
    assert dict(request.settings) == {
        "negative_prompt": "ugly",
        "steps": 20,
        "guidance_scale": 7.0,
        "seed": 42,
        "width": 512,
        "height": 512,
        "sampler": "dpmpp-2m-karras",
        "rng": "torch-cuda",  # RNG: cuda
    }
    assert again.ignored == ()  # nothing from inside its SDCPP JSON
    std = again_request(
        png_with(hermetic / "std.png", SDCPP.replace("RNG: cuda", "RNG: std_default"))
    )
    assert (std.request.settings["rng"], std.ignored) == ("torch-cpu", ("RNG (std_default)",))
    cpu = again_request(png_with(hermetic / "c.png", SDCPP_CPU))
    settings = cpu.request.settings
    assert (settings["sampler"], settings["rng"], settings["clip_skip"]) == (
        "euler-a", "torch-cpu", 2
    )  # fmt: skip
    # sd.cpp's Hires upscale names the upscaler, its Hires scale is the scale
    assert (settings["hires"], settings["hires_scale"], settings["hires_upscaler"]) == (
        True, 2.0, "latent"
    )  # fmt: skip
    assert cpu.ignored == ()


def test_unknown_keys_are_warned_in_one_line_and_the_image_is_made(run_cli, hermetic):
    png_with(
        hermetic / "a.png", A1111.replace(", Version", ", Face restoration: CodeFormer, Version")
    )
    result = run_cli("again", "a.png", *SMALL, "--no-hires", "--out", "fox.png")
    assert result.exit_code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("ignored: ")]
    assert warnings == ["ignored: Face restoration"]
    text = read_infotext(hermetic / "fox.png")
    assert text.startswith("masterpiece, (a red fox:1.2) in the snow, BREAK pine trees\n")
    assert "Seed: 3141592653," in text and "Sampler: DPM++ 2M Karras," in text
    assert "Variation seed: 12345, Variation seed strength: 0.25" in text
    assert "Model: tiny," in text and "RNG: torch-cuda" in text


def test_the_model_is_found_by_the_hash_of_its_checkpoint(run_cli, hermetic):
    checkpoint = hermetic / "pocket-model.safetensors"
    tiny_checkpoint(checkpoint)
    assert run_cli("import", checkpoint, "--name", "pocket").exit_code == 0
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:10]
    # sdgen's own infotext records it, as A1111 does
    fields = {
        "prompt": "a cat", "negative_prompt": "", "steps": 2, "sampler_label": "Euler",
        "guidance_scale": 7, "seed": 1, "width": 64, "height": 64, "model": "pocket",
        "version": "0.1.0",
    }  # fmt: skip
    assert f"Size: 64x64, Model hash: {digest}, Model: pocket," in infotext(fields)
    renamed = A1111_OLD.replace("6ce0161689", digest).replace("v1-5-pruned-emaonly", "x")
    assert again_request(png_with(hermetic / "h.png", renamed)).request.model == "pocket"
    # sd.cpp writes no hash, only the file name it loaded
    by_file = SDCPP.replace("v1-5-pruned-emaonly.safetensors", checkpoint.name)
    assert again_request(png_with(hermetic / "f.png", by_file)).request.model == "pocket"
    # a hash that matches nothing, with a name that does: the name, and a note
    mismatch = A1111_OLD.replace("6ce0161689", "0123456789").replace(
        "v1-5-pruned-emaonly", "pocket"
    )
    again = again_request(png_with(hermetic / "m.png", mismatch))
    assert again.request.model == "pocket" and "Model hash (0123456789)" in again.ignored


def test_a_missing_model_and_an_image_without_infotext_exit_2(run_cli, hermetic):
    missing = A1111_OLD.replace("6ce0161689", "0123456789").replace(
        "v1-5-pruned-emaonly", "dreamshaper_8"
    )
    png_with(hermetic / "m.png", missing)
    result = run_cli("again", "m.png", "--out", "x.png")
    one_line_error(result, "Model: dreamshaper_8", "0123456789", "sdgen import PATH")
    assert not (hermetic / "x.png").exists()
    # --model wins over the image's
    chosen = run_cli("again", "m.png", *SMALL, "--out", "x.png")
    assert chosen.exit_code == 0, chosen.stderr

    Image.new("RGB", (8, 8)).save(hermetic / "bare.png")
    one_line_error(run_cli("again", "bare.png"), "holds no generation parameters")
    one_line_error(run_cli("again", "nope.png"), "nope.png")
    one_line_error(run_cli("again", "m.png", "--seed", "+x"), "+N")
    assert not (hermetic / "outputs").exists()


@pytest.mark.parametrize(
    ("label", "schedule", "name", "ignored"),
    [
        ("DPM++ 2M Karras", None, "dpmpp-2m-karras", ()),
        ("DPM++ 2M", None, "dpmpp-2m", ()),  # before A1111 1.9: its uniform table
        ("DPM++ 2M", "Automatic", "dpmpp-2m-karras", ()),  # 1.9+: DPM++ 2M's own
        ("DPM++ 2M", "Exponential", "dpmpp-2m", ("Schedule type (Exponential)",)),
        ("Euler", "Karras", "euler", ("Schedule type (Karras)",)),
        ("DDIM", None, "ddim", ()),
        ("Heun", None, None, ("Sampler (Heun)",)),
    ],
)
def test_a1111_samplers_and_schedule_types(hermetic, label, schedule, name, ignored):
    text = A1111_OLD.replace("Euler a", label).replace(", ENSD: 31337", "")
    if schedule:
        text = text.replace(", CFG", f", Schedule type: {schedule}, CFG")
    again = again_request(png_with(hermetic / "s.png", text))
    assert again.request.settings.get("sampler") == name
    assert again.ignored == ignored
