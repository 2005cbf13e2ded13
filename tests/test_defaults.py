"""The defaults a new user gets: DPM++ 2M Karras at 25 steps, with keras_cv's DDIM at 50
one preset away (``--config keras-cv``), through the real CLI and its PNG infotext."""

from __future__ import annotations

import dataclasses
import json

import pytest
from conftest import png_files

from sdgen.cli.generate import _CONFIG_OPTIONS, generate
from sdgen.config import GenerationConfig
from sdgen.output.manifest import read_manifest
from sdgen.output.png import parse_infotext, read_infotext

#: The tiny model at 64 px with no --steps or --sampler, so the defaults apply.
SMALL = ["--model", "tiny", "--width", "64", "--height", "64", "--seed", "5"]


def _settings(path) -> tuple[str, str]:
    parsed = parse_infotext(read_infotext(path))
    return parsed["Sampler"], parsed["Steps"]


def test_a_default_run_is_dpmpp_2m_karras_at_25_steps(run_cli, hermetic):
    result = run_cli("a cat", *SMALL)
    assert result.exit_code == 0, result.stderr
    [path] = png_files(hermetic / "outputs")
    assert _settings(path) == ("DPM++ 2M Karras", "25")
    [record] = read_manifest(hermetic / "outputs")
    assert (record["sampler"], record["steps"]) == ("dpmpp-2m-karras", 25)


def test_the_keras_cv_preset_gives_ddim_at_50_and_flags_still_win(run_cli, hermetic):
    result = run_cli("a cat", *SMALL, "--config", "keras-cv", "--outdir", "keras-cv")
    assert result.exit_code == 0, result.stderr
    [path] = png_files(hermetic / "keras-cv")
    assert _settings(path) == ("DDIM", "50")

    result = run_cli("a cat", *SMALL, "--config", "keras-cv", "--steps", "10", "--json")
    assert result.exit_code == 0, result.stderr
    [image] = json.loads(result.stdout)["images"]
    assert _settings(hermetic / image["path"]) == ("DDIM", "10")
    assert (image["sampler"], image["steps"]) == ("ddim", 10)


def test_prompts_file_lines_get_the_defaults_unless_they_say_otherwise(run_cli, hermetic):
    (hermetic / "prompts.txt").write_text('a cat\n--prompt "a dog" --sampler_name DDIM\n')
    result = run_cli("--prompts-file", "prompts.txt", *SMALL)
    assert result.exit_code == 0, result.stderr
    by_prompt = {r["prompt"]: r for r in read_manifest(hermetic / "outputs")}
    assert (by_prompt["a cat"]["sampler"], by_prompt["a cat"]["steps"]) == (
        "dpmpp-2m-karras",
        25,
    )
    assert (by_prompt["a dog"]["sampler"], by_prompt["a dog"]["steps"]) == ("ddim", 25)


def test_the_cli_defaults_are_the_libraries(run_cli):
    """One place sets the defaults: the CLI with no flags builds GenerationConfig's."""
    parsed = generate.make_context("generate", ["p"]).params
    fields = {field.name: field.default for field in dataclasses.fields(GenerationConfig)}
    for name in _CONFIG_OPTIONS:
        assert parsed[name] == fields[name], name
    help_text = " ".join(run_cli("generate", "--help").stdout.split())
    assert "Denoising steps (>= 1). [default: 25]" in help_text
    assert "[default: dpmpp-2m-karras]" in help_text


@pytest.mark.parametrize("preset", ["draft", "quality", "keras-cv"])
def test_presets_name_the_sampler_their_steps_were_chosen_for(run_cli, preset):
    """A preset's step count suits one sampler, so it names that sampler too."""
    parsed = generate.make_context("generate", ["p", "--config", preset]).params
    sampler = "ddim" if preset == "keras-cv" else "dpmpp-2m-karras"
    steps = {"draft": 15, "quality": 40, "keras-cv": 50}[preset]
    assert (parsed["sampler"], parsed["steps"]) == (sampler, steps)
