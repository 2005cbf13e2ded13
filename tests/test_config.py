"""GenerationConfig validation and presets."""

from __future__ import annotations

import pytest

from sdgen.config import GenerationConfig
from sdgen.errors import ConfigError, PromptError, UsageError
from sdgen.presets import find_preset, load_preset, preset_names


def test_defaults_match_the_documented_ones():
    config = GenerationConfig("a cat")
    assert (config.steps, config.guidance_scale, config.num_images, config.batch_size) == (
        25,
        7.5,
        1,
        1,
    )
    assert config.sampler == "dpmpp-2m-karras" and config.seed is None and config.width is None


def test_config_is_frozen():
    config = GenerationConfig("a cat")
    with pytest.raises(AttributeError):
        config.steps = 3


@pytest.mark.parametrize(
    "kwargs",
    [
        {"steps": 0},
        {"steps": 2.5},
        {"guidance_scale": float("nan")},
        {"guidance_scale": -0.5},
        {"guidance_scale": "7"},
        {"width": 576 + 32},
        {"height": 32},
        {"num_images": 0},
        {"batch_size": 0},
        {"seed": -2},  # -1 is a random seed, as in A1111
        {"seed": -1.0},
        {"seed": 2**32 - 1, "num_images": 2},
        {"sampler": "nope"},
    ],
)
def test_invalid_values_are_usage_errors(kwargs):
    with pytest.raises(ConfigError):
        GenerationConfig("a cat", **kwargs)


def test_empty_prompt():
    with pytest.raises(PromptError):
        GenerationConfig("  ")
    assert issubclass(PromptError, UsageError)


def test_sizes_are_never_rounded():
    config = GenerationConfig("a cat", width=576, height=320)
    assert (config.width, config.height) == (576, 320)


def test_with_defaults_fills_only_unset_values():
    config = GenerationConfig("a cat", width=256).with_defaults(512, 512, seed=99)
    assert (config.width, config.height, config.seed) == (256, 512, 99)
    assert GenerationConfig("a", seed=0).with_defaults(64, 64, 5).seed == 0


def test_shipped_presets_load_and_use_known_keys():
    assert {"smoke", "draft", "quality", "portrait", "keras-cv"} <= set(preset_names())
    allowed = {"model", "width", "height", "steps", "sampler", "guidance_scale", "negative_prompt"}
    for name in preset_names():
        assert set(load_preset(name, allowed)) <= allowed
    assert load_preset("smoke", allowed)["model"] == "tiny"


def test_preset_unknown_key_and_missing_file(tmp_path):
    path = tmp_path / "x.toml"
    path.write_text("stepz = 3\n")
    with pytest.raises(ConfigError, match="stepz"):
        load_preset(str(path), {"steps"})
    with pytest.raises(ConfigError, match="does not exist"):
        find_preset(str(tmp_path / "missing.toml"))
    path.write_text("steps = [\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_preset(str(path), {"steps"})
