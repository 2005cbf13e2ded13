"""Every bad input gets one line on stderr, a fixed exit status and no partial files."""

from __future__ import annotations

import pytest
from conftest import FAST, TINY, png_files

USAGE, FAILURE, SOME_FAILED = 2, 1, 3


def assert_error(result, status, *fragments):
    assert result.exit_code == status, (result.exit_code, result.stderr)
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("Error")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr  # one line, last
    line = errors[0]
    assert line.startswith("Error: "), line
    for fragment in fragments:
        assert fragment in line, line
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("prompt", ["", "   "])
def test_empty_prompt(run_cli, prompt):
    assert_error(run_cli(prompt, *TINY), USAGE, "prompt is empty")


def test_prompts_have_no_length_limit(run_cli, hermetic):
    """Once refused past 77 tokens; now cut into 75-token chunks (sdgen.text.chunks)."""
    result = run_cli(" ".join(["castle"] * 300), *TINY, "--negative-prompt", " ".join(["fog"] * 90))
    assert result.exit_code == 0, result.stderr
    assert len(png_files(hermetic / "outputs")) == 1


@pytest.mark.parametrize("steps", ["0", "-3"])
def test_steps_below_one(run_cli, steps):
    assert_error(
        run_cli("x", "--model", "tiny", "--steps", steps), USAGE, "steps must be at least 1"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-1", "finite number >= 0"),
        ("nan", "finite number >= 0"),
        ("inf", "finite number >= 0"),
        ("abc", "'abc' is not a valid float"),
    ],
)
def test_bad_guidance_scale(run_cli, value, message):
    assert_error(run_cli("x", "--model", "tiny", "--guidance-scale", value), USAGE, message)


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--width", "100", "width 100 is not a multiple of 64"),
        ("--height", "130", "use 128 or 192"),
        ("--width", "0", "width must be at least 64"),
        ("--height", "99999", "height must be at most 4096"),
    ],
)
def test_size_the_network_cannot_take(run_cli, flag, value, message):
    assert_error(run_cli("x", "--model", "tiny", flag, value), USAGE, message)


def test_prompts_file_missing(run_cli):
    assert_error(run_cli("--prompts-file", "nope.txt", *TINY), USAGE, "nope.txt does not exist")


def test_prompts_file_unreadable(run_cli, hermetic):
    (hermetic / "folder.txt").mkdir()
    assert_error(run_cli("--prompts-file", "folder.txt", *TINY), USAGE, "is a folder")


def test_prompts_file_empty_or_only_comments(run_cli, hermetic):
    (hermetic / "empty.txt").write_text("\n  \n")
    assert_error(run_cli("--prompts-file", "empty.txt", *TINY), USAGE, "is empty")
    (hermetic / "comments.txt").write_text("# one\n# two\n")
    assert_error(run_cli("--prompts-file", "comments.txt", *TINY), USAGE, "only comments")


def test_prompts_file_not_utf8(run_cli, hermetic):
    (hermetic / "latin1.txt").write_bytes("a cat\ncaf\xe9 au lait\n".encode("latin-1"))
    assert_error(run_cli("--prompts-file", "latin1.txt", *TINY), USAGE, "not UTF-8", "line 2")


def test_prompt_and_prompts_file_together(run_cli, hermetic):
    (hermetic / "p.txt").write_text("a\n")
    assert_error(run_cli("x", "--prompts-file", "p.txt", *TINY), USAGE, "not both")


def test_output_folder_that_cannot_be_written(run_cli, hermetic):
    (hermetic / "a-file").write_text("not a folder")
    result = run_cli("x", *TINY, "--outdir", "a-file/sub")
    assert_error(result, FAILURE, "cannot write to output folder")


def test_existing_output_is_never_overwritten_without_flag(run_cli, hermetic):
    target = hermetic / "keep.png"
    target.write_bytes(b"precious")
    assert_error(run_cli("x", *TINY, "--out", "keep.png"), USAGE, "already exists", "--overwrite")
    assert target.read_bytes() == b"precious"
    result = run_cli("x", *TINY, "--out", "keep.png", "--overwrite")
    assert result.exit_code == 0, result.stderr
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_out_must_be_an_image_file_type(run_cli):
    assert_error(run_cli("x", *TINY, "--out", "picture.gif"), USAGE, "must end in .png, .jpg")


def test_unknown_model_preset_and_sampler(run_cli, hermetic):
    assert_error(run_cli("x", "--model", "sd-v9"), USAGE, "unknown model 'sd-v9'", "tiny")
    assert_error(run_cli("x", "--config", "nope"), USAGE, "unknown preset 'nope'", "smoke")
    assert_error(run_cli("x", *TINY, "--sampler", "magic"), USAGE, "unknown sampler", "ddim")


def test_unknown_preset_key_is_an_error(run_cli, hermetic):
    (hermetic / "bad.toml").write_text("steps = 3\nstpes = 4\n")
    assert_error(run_cli("x", "--config", "bad.toml"), USAGE, "unknown key(s)", "stpes")


def test_bad_seed(run_cli):
    assert_error(run_cli("x", *TINY, "--seed", "-2"), USAGE, "seed must be at least 0, or -1")
    assert_error(run_cli("x", *TINY, "--seed", str(2**32)), USAGE, "seed must be at most")


def test_seed_minus_one_means_random(run_cli, hermetic):
    """As in AUTOMATIC1111: from the CLI, a prompts file (JSON too) and the API."""
    from sdgen.config import MAX_SEED, GenerationConfig
    from sdgen.output.manifest import read_manifest

    assert GenerationConfig(prompt="x", seed=-1).seed is None
    (hermetic / "p.txt").write_text('{"prompt": "a dog", "seed": -1}\n')
    for source in (["a cat", "--seed", "-1", "--num-images", "2"], ["--prompts-file", "p.txt"]):
        result = run_cli(*source, *FAST)
        assert result.exit_code == 0, result.stderr
    seeds = [record["seed"] for record in read_manifest(hermetic / "outputs")]
    assert len(seeds) == 3 and all(0 <= seed <= MAX_SEED for seed in seeds), seeds
    assert seeds[1] == seeds[0] + 1


def test_batch_size_is_a_number_or_auto(run_cli):
    assert_error(run_cli("x", *TINY, "--batch-size", "lots"), USAGE, "'lots'", "or 'auto'")
    assert_error(run_cli("x", *TINY, "--batch-size", "0"), USAGE, "batch size must be at least 1")


def test_weights_folder_missing_a_file(run_cli, hermetic):
    (hermetic / "w").mkdir()
    result = run_cli("x", *TINY, "--weights", "w")
    assert_error(result, FAILURE, "kcv_encoder.h5", "kcv_decoder.h5", "are not in w")


def test_out_of_memory_suggests_smaller_batch_or_size(run_cli, hermetic, monkeypatch):
    import tensorflow as tf

    from sdgen.pipeline import Pipeline

    def exhausted(*_args, **_kwargs):
        raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")

    monkeypatch.setattr(Pipeline, "_denoise", exhausted)
    result = run_cli("x", *TINY, "--batch-size", "2", "--num-images", "2")
    assert_error(result, FAILURE, "ran out of memory", "--batch-size 1", "smaller --width")
    assert not png_files(hermetic / "outputs")
    assert not list((hermetic / "outputs").glob(".*"))  # no temporary files left


def test_failure_after_some_images_keeps_them(run_cli, hermetic, monkeypatch):
    from sdgen.errors import BadImageError
    from sdgen.pipeline import Pipeline

    real_decode = Pipeline._decode
    calls = {"n": 0}

    def decode_then_fail(self, networks, latent, *rest):
        calls["n"] += 1
        if calls["n"] == 2:
            raise BadImageError("the networks produced NaN or infinite values")
        return real_decode(self, networks, latent, *rest)

    monkeypatch.setattr(Pipeline, "_decode", decode_then_fail)
    result = run_cli("x", *TINY, "--seed", "1", "--num-images", "3")
    assert result.exit_code == SOME_FAILED  # some images were made, some failed
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert errors == ["Error: images 1, 2: the networks produced NaN or infinite values"]
    assert result.stderr.splitlines()[-1] == "done 1, skipped 0, failed 2"
    [kept] = png_files(hermetic / "outputs")
    assert kept.name == "00000-1-x.png"
    assert not list((hermetic / "outputs").glob(".*"))
