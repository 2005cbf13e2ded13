"""The CLI end to end with the tiny model: files, metadata, manifest, naming, options."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import TINY, pixels, png_files

from sdgen.output.manifest import read_manifest
from sdgen.output.png import parse_infotext, read_infotext


@pytest.mark.fresh_load  # it checks the recorded load time
def test_generate_writes_png_with_infotext_and_manifest(run_cli, hermetic):
    result = run_cli("a red cube", *TINY, "--seed", "123", "--negative-prompt", "blurry")
    assert result.exit_code == 0, result.stderr
    [path] = png_files(hermetic / "outputs")
    assert path.name == "00000-123-a-red-cube.png"
    image = pixels(path)
    assert image.shape == (128, 128, 3)
    assert image.std() > 5  # not a flat or black image
    assert read_infotext(path) == (
        "a red cube\nNegative prompt: blurry\n"
        "Steps: 2, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 123, Size: 128x128, "
        "Model: tiny, "
        "Version: sdgen 0.1.0"
    )
    [record] = read_manifest(hermetic / "outputs")
    assert record["file"] == path.name
    assert record["seed"] == 123
    assert record["prompt"] == "a red cube"
    assert record["negative_prompt"] == "blurry"
    assert record["steps"] == 2 and record["guidance_scale"] == 7.5
    assert record["width"] == record["height"] == 128
    assert record["model"] == "tiny" and record["sampler"] == "dpmpp-2m-karras"
    import hashlib

    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["seconds"] > 0 and record["load_seconds"] > 0
    assert "seed 123" in result.stderr
    assert "Traceback" not in result.stderr


def test_same_seed_same_pixels_and_seeds_count_up(run_cli, hermetic):
    assert run_cli("a house", *TINY, "--seed", "40", "--num-images", "3").exit_code == 0
    assert run_cli("a house", *TINY, "--seed", "41", "--outdir", "again").exit_code == 0
    first = png_files(hermetic / "outputs")
    assert [p.name for p in first] == [
        "00000-40-a-house.png",
        "00001-41-a-house.png",
        "00002-42-a-house.png",
    ]
    [again] = png_files(hermetic / "again")
    assert np.array_equal(pixels(first[1]), pixels(again))  # image 1 of seed 40 == seed 41
    assert not np.array_equal(pixels(first[0]), pixels(first[1]))


def test_batch_size_never_changes_pixels(run_cli, hermetic):
    for batch in ("1", "2", "3", "auto"):
        args = ("a boat", *TINY, "--seed", "9", "--num-images", "3", "--batch-size", batch)
        assert run_cli(*args, "--outdir", f"b{batch}").exit_code == 0
    reference = [pixels(p) for p in png_files(hermetic / "b1")]
    for batch in ("2", "3", "auto"):
        images = [pixels(p) for p in png_files(hermetic / f"b{batch}")]
        assert all(np.array_equal(a, b) for a, b in zip(reference, images, strict=True))


def test_random_seed_is_printed_and_recorded(run_cli, hermetic):
    result = run_cli("a tree", *TINY, "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    [image] = summary["images"]
    seed = image["seed"]
    assert f"seed {seed}" in result.stderr
    assert parse_infotext(read_infotext(image["path"]))["Seed"] == str(seed)
    assert summary["models"] == ["tiny"] and summary["device"] == "CPU"
    assert (summary["done"], summary["skipped"], summary["failed"]) == (1, 0, 0)


def test_out_names_one_file_and_derives_numbered_names(run_cli, hermetic):
    assert run_cli("one", *TINY, "--seed", "1", "--out", "single.png").exit_code == 0
    assert (hermetic / "single.png").is_file()
    result = run_cli("many", *TINY, "--seed", "1", "--num-images", "2", "--out", "many.png")
    assert result.exit_code == 0, result.stderr
    assert (hermetic / "many-0.png").is_file() and (hermetic / "many-1.png").is_file()
    assert not (hermetic / "many.png").exists()
    assert len(read_manifest(hermetic)) == 3


def test_grid_shows_every_image(run_cli, hermetic):
    result = run_cli("grid", *TINY, "--seed", "5", "--num-images", "3", "--grid", "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    grid = pixels(summary["grid"])
    assert grid.shape == (256, 256, 3)  # 2x2 cells of 128 px, one left black
    images = [pixels(image["path"]) for image in summary["images"]]
    assert np.array_equal(grid[:128, :128], images[0])
    assert np.array_equal(grid[:128, 128:], images[1])
    assert np.array_equal(grid[128:, :128], images[2])
    assert not grid[128:, 128:].any()


def test_prompts_file_gives_every_prompt_its_own_files(run_cli, hermetic):
    (hermetic / "prompts.txt").write_text(
        "# my prompts\n\na castle at dusk\n  \n# skipped\na lighthouse\n", encoding="utf-8"
    )
    result = run_cli("--prompts-file", "prompts.txt", *TINY, "--seed", "7", "--json")
    assert result.exit_code == 0, result.stderr
    names = [p.name for p in png_files(hermetic / "outputs")]
    assert names == ["00000-7-a-castle-at-dusk.png", "00001-7-a-lighthouse.png"]
    assert result.stderr.count("loading tiny") == 1  # the model is loaded once
    prompts = [record["prompt"] for record in read_manifest(hermetic / "outputs")]
    assert prompts == ["a castle at dusk", "a lighthouse"]


def test_preset_values_and_explicit_flags(run_cli, hermetic):
    (hermetic / "mine.toml").write_text('steps = 3\nnegative-prompt = "fog"\n')
    result = run_cli("p", "--config", "smoke", "--seed", "2", "--steps", "1", "--json")
    assert result.exit_code == 0, result.stderr
    [image] = json.loads(result.stdout)["images"]
    # smoke.toml sets the tiny model, 128 px and 4 steps; --steps 1 wins over the preset
    assert (image["model"], image["width"], image["steps"]) == ("tiny", 128, 1)
    result = run_cli(
        "p", *TINY[:6], "--config", "mine.toml", "--seed", "2", "--json", "--outdir", "o2"
    )
    assert result.exit_code == 0, result.stderr
    [image] = json.loads(result.stdout)["images"]
    assert (image["steps"], image["negative_prompt"]) == (3, "fog")


def test_quiet_prints_nothing(run_cli):
    result = run_cli("q", *TINY, "--quiet")
    assert result.exit_code == 0
    assert result.stderr == "" and result.stdout == ""


def test_generate_subcommand_is_the_default(run_cli, hermetic):
    result = run_cli("generate", "explicit", *TINY, "--seed", "1")
    assert result.exit_code == 0, result.stderr
    assert (hermetic / "outputs" / "00000-1-explicit.png").is_file()


def test_version_and_help(run_cli):
    result = run_cli("--version")
    assert (result.exit_code, result.stdout.strip()) == (0, "sdgen 0.1.0")
    result = run_cli("--help")
    assert result.exit_code == 0 and "generate" in result.stdout
    result = run_cli("generate", "--help")
    assert result.exit_code == 0
    for option in ("--steps", "--seed", "--guidance-scale", "--xla", "--mixed-precision"):
        assert option in result.stdout


def test_help_does_not_import_tensorflow():
    code = (
        "import sys; from sdgen.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_real_subprocess_like_a_users_ci(hermetic):
    out = hermetic / "ci.png"
    args = [sys.executable, "-m", "sdgen", "ci smoke", *TINY, "--seed", "11", "--out", str(out)]
    process = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stderr
    assert pixels(out).shape == (128, 128, 3)
    assert parse_infotext(read_infotext(out))["Seed"] == "11"
    # TensorFlow's start-up logs are kept off the terminal
    assert "oneDNN" not in process.stderr and "absl" not in process.stderr


def test_every_sampler_from_the_cli_is_recorded_in_a1111_naming(run_cli, hermetic):
    labels = {
        "ddim": "DDIM",
        "euler": "Euler",
        "euler-a": "Euler a",
        "dpmpp-2m": "DPM++ 2M",
        "dpmpp-2m-karras": "DPM++ 2M Karras",
    }
    for name, label in labels.items():
        result = run_cli("s", *TINY, "--seed", "3", "--sampler", name, "--outdir", name)
        assert result.exit_code == 0, result.stderr
        [path] = png_files(hermetic / name)
        assert parse_infotext(read_infotext(path))["Sampler"] == label
        [record] = read_manifest(hermetic / name)
        assert (record["sampler"], record["sampler_label"]) == (name, label)


def test_preset_can_set_the_sampler(run_cli, hermetic):
    (hermetic / "fast.toml").write_text('sampler = "dpmpp-2m-karras"\nsteps = 3\n')
    result = run_cli("p", *TINY[:6], "--config", "fast.toml", "--json")
    assert result.exit_code == 0, result.stderr
    [image] = json.loads(result.stdout)["images"]
    assert (image["sampler"], image["steps"]) == ("dpmpp-2m-karras", 3)


def test_progress_lines_when_stderr_is_not_a_terminal(run_cli):
    result = run_cli("p", *TINY, "--num-images", "2", "--steps", "3")
    assert result.exit_code == 0, result.stderr
    progress = [line for line in result.stderr.splitlines() if line.startswith("image ")]
    assert progress[-1].startswith("image 2/2: step 3/3,") and "it/s" in progress[-1]
