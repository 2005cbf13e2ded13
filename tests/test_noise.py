"""Noise sources and A1111's variation seeds: ``--rng``, ``--subseed``/
``--subseed-strength`` and ``--seed-resize-from``, from the library and the CLI."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import only_line, pixels, png_files

from sdgen.batch.identity import settings_from_infotext
from sdgen.config import GenerationConfig
from sdgen.errors import ConfigError
from sdgen.noise import LatentNoise
from sdgen.noise.variation import centre, slerp, starting_noise
from sdgen.output.png import read_infotext


def test_sdgen_rng_is_unchanged_pcg64_in_channels_last_order():
    expected = np.random.Generator(np.random.PCG64(3)).standard_normal((16, 8, 4), np.float32)
    assert np.array_equal(LatentNoise("sdgen", 3).draw(128, 64), expected)


def test_slerp_ends_are_the_two_noises_and_the_middle_keeps_unit_variance():
    a, b = LatentNoise("sdgen", 1).draw(512, 512), LatentNoise("sdgen", 2).draw(512, 512)
    np.testing.assert_allclose(slerp(0.0, a, b), a, atol=1e-6)
    np.testing.assert_allclose(slerp(1.0, a, b), b, atol=1e-6)
    middle = slerp(0.5, a, b)
    assert abs(middle.std() - 1) < 0.02  # a straight mix would give 0.71
    assert abs((a + b).std() / 2 - 0.71) < 0.02
    assert not np.allclose(middle, a) and not np.allclose(middle, b)


def test_centre_crops_a_larger_noise_and_pads_a_smaller_one_with_the_other():
    small, big = np.ones((2, 4, 1)), np.zeros((4, 8, 1))
    placed = centre(small, big)
    assert placed[1:3, 2:6].all() and placed.sum() == small.sum()
    cropped = centre(np.arange(64.0).reshape(8, 8, 1), np.zeros((4, 4, 1)))
    assert np.array_equal(cropped[..., 0], np.arange(64.0).reshape(8, 8)[2:6, 2:6])


def test_seed_resize_from_keeps_the_old_sizes_noise_in_the_middle():
    old = starting_noise(LatentNoise("sdgen", 9), 512, 512)
    new = starting_noise(LatentNoise("sdgen", 9), 512, 768, resize_from=(512, 512))
    assert new.shape == (64, 96, 4)
    assert np.array_equal(new[:, 16:80], old)
    assert not np.array_equal(new[:, :16], old[:, :16])


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"rng": "mps"}, "rng must be one of sdgen, torch-cpu, torch-cuda, got 'mps'"),
        ({"subseed_strength": 0.5}, "subseed strength 0.5 needs a variation seed"),
        ({"subseed": 1, "subseed_strength": 1.5}, "subseed strength must be from 0 to 1"),
        ({"subseed": -5}, "subseed must be at least 0"),
        ({"seed_resize_from": "512"}, "size must be WIDTHxHEIGHT"),
        ({"seed_resize_from": "500x512"}, "seed resize width must be a multiple of 8"),
    ],
)
def test_bad_noise_settings_are_refused(settings, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        GenerationConfig("a cat", **settings)


def test_a1111s_cpu_label_and_random_subseed_are_accepted():
    assert GenerationConfig("a cat", rng="CPU").rng == "torch-cpu"
    assert GenerationConfig("a cat", subseed=-1).subseed is None
    assert GenerationConfig("a cat", seed_resize_from="640X448").seed_resize_from == (640, 448)


def _make(run_cli, folder, *options):
    result = run_cli(
        "a red fox", "--model", "tiny", "--width", "64", "--height", "64", "--steps", "2",
        "--seed", "5", "--outdir", folder, *options,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    (path,) = png_files(folder)
    return path


def test_cli_variation_seed_changes_the_image_records_it_and_resumes(run_cli, tmp_path):
    plain = _make(run_cli, tmp_path / "plain")
    varied = _make(
        run_cli, tmp_path / "varied", "--rng", "torch-cpu", "--subseed", "9",
        "--subseed-strength", "0.4", "--seed-resize-from", "128x64",
    )  # fmt: skip
    assert not np.array_equal(pixels(plain), pixels(varied))
    text = read_infotext(varied)
    assert "Variation seed: 9, Variation seed strength: 0.4" in text
    assert "Seed resize from: 128x64" in text and "RNG: torch-cpu" in text
    settings = settings_from_infotext(text)
    assert settings["subseed"] == 9 and settings["subseed_strength"] == 0.4
    assert settings["seed_resize_from"] == (128, 64) and settings["rng"] == "torch-cpu"
    assert "RNG" not in read_infotext(plain) and "Variation" not in read_infotext(plain)
    again = run_cli(
        "a red fox", "--model", "tiny", "--width", "64", "--height", "64", "--steps", "2",
        "--seed", "5", "--outdir", tmp_path / "varied", "--rng", "torch-cpu",
        "--subseed", "9", "--subseed-strength", "0.4", "--seed-resize-from", "128x64",
    )  # fmt: skip
    assert again.exit_code == 0 and "already made" in again.stderr + again.stdout
    other = run_cli(
        "a red fox", "--model", "tiny", "--width", "64", "--height", "64", "--steps", "2",
        "--seed", "5", "--outdir", tmp_path / "varied", "--rng", "torch-cpu",
        "--subseed", "9", "--subseed-strength", "0.5", "--seed-resize-from", "128x64",
    )  # fmt: skip
    assert other.exit_code == 0 and len(png_files(tmp_path / "varied")) == 2


def test_cli_bad_subseed_strength_is_a_one_line_error(run_cli, tmp_path):
    result = run_cli("a fox", "--model", "tiny", "--subseed-strength", "0.5", "--outdir", tmp_path)
    assert result.exit_code == 2
    assert "needs a variation seed" in only_line(result.stderr)
    assert not png_files(tmp_path)
