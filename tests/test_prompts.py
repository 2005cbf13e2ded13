"""Prompts files: plain, AUTOMATIC1111 and JSON Lines lines, per-line errors, and the
file-level errors that still raise."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdgen.batch.prompts_file import (
    _BOOL_KEYS,
    _INT_KEYS,
    _LIST_KEYS,
    _NUMBER_KEYS,
    _SIZE_KEYS,
    _STR_KEYS,
    _SUPPORTED_TAGS,
    CONFIG_KEYS,
    PromptLine,
    parse_line,
    read_prompts_file,
)
from sdgen.config import GenerationConfig, emphasis_mode
from sdgen.errors import PromptsFileError


def write(name: str, text: str | bytes) -> Path:
    path = Path(name)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, "utf-8")
    return path


# -- plain prompts ------------------------------------------------------------------------


def test_plain_prompt_has_no_overrides():
    line = parse_line("  a red fox in the snow  ", 4)
    assert line == PromptLine(4, "a red fox in the snow", {}, None)


def test_plain_prompt_that_looks_like_an_option_with_one_dash():
    assert parse_line("-a cat", 1) == PromptLine(1, "-a cat", {})


# -- AUTOMATIC1111 lines ------------------------------------------------------------------


def test_a1111_line_with_every_tag():
    line = parse_line(
        '--prompt "a castle at dusk" --negative_prompt blurry --seed 42 --steps 30 '
        '--cfg_scale 7 --width 512 --height 576 --sampler_name "Euler a" '
        "--batch_size 2 --n_iter 3 --model tiny",
        9,
    )
    assert line.error is None
    assert line.line_number == 9
    assert line.prompt == "a castle at dusk"
    assert line.overrides == {
        "negative_prompt": "blurry",
        "seed": 42,
        "steps": 30,
        "guidance_scale": 7.0,
        "width": 512,
        "height": 576,
        "sampler": "Euler a",
        "batch_size": 2,
        "num_images": 6,
        "model": "tiny",
    }
    assert isinstance(line.overrides["guidance_scale"], float)
    assert isinstance(line.overrides["steps"], int)


def test_a1111_unquoted_multi_word_values():
    line = parse_line(
        "--prompt a castle at dusk, oil painting --negative_prompt low quality, blurry "
        "--sampler_name DPM++ 2M Karras --steps 20",
        1,
    )
    assert line.error is None
    assert line.prompt == "a castle at dusk, oil painting"
    assert line.overrides == {
        "negative_prompt": "low quality, blurry",
        "sampler": "DPM++ 2M Karras",
        "steps": 20,
    }


def test_a1111_quoted_values_keep_inner_spacing_and_dashes():
    line = parse_line("--prompt 'a  cat -- on a mat' --negative_prompt \"\"", 1)
    assert line.error is None
    assert line.prompt == "a  cat -- on a mat"
    assert line.overrides == {"negative_prompt": ""}


def test_a1111_tag_with_equals_sign():
    line = parse_line("--prompt=a cat --steps=12", 1)
    assert (line.prompt, line.overrides, line.error) == ("a cat", {"steps": 12}, None)


@pytest.mark.parametrize(
    ("tags", "num_images"),
    [
        ("--batch_size 2 --n_iter 3", 6),
        ("--n_iter 3 --batch_size 2", 6),
        ("--batch_size 4", 4),
        ("--n_iter 5", 5),
        ("--batch_size 1 --n_iter 1", 1),
    ],
)
def test_a1111_n_iter_times_batch_size(tags, num_images):
    line = parse_line(f"--prompt a cat {tags}", 1)
    assert line.error is None
    assert line.overrides["num_images"] == num_images
    assert "n_iter" not in line.overrides


def test_a1111_without_batch_tags_leaves_num_images_alone():
    assert parse_line("--prompt a cat --seed 1", 1).overrides == {"seed": 1}


@pytest.mark.parametrize("label", ["Euler a", "Euler", "DDIM", "DPM++ 2M", "euler-a", "ddim"])
def test_a1111_sampler_labels_and_names_are_kept_as_given(label):
    line = parse_line(f'--prompt a cat --sampler_name "{label}"', 1)
    assert line.error is None
    assert line.overrides == {"sampler": label}


def test_a1111_seed_minus_one_means_random():
    line = parse_line("--prompt a cat --seed -1", 1)
    assert line.error is None
    assert line.overrides == {"seed": None}


def test_a1111_repeated_tag_last_one_wins():
    assert parse_line("--prompt a --steps 5 --steps 6 --prompt b", 1) == PromptLine(
        1, "b", {"steps": 6}
    )


# -- JSON lines ---------------------------------------------------------------------------


def test_json_line():
    line = parse_line(
        '{"prompt": "a cat", "seed": 3, "steps": 20, "sampler": "dpmpp-2m", "width": 576, '
        '"guidance_scale": 7, "negative_prompt": "dogs", "num_images": 4, "batch_size": 2, '
        '"height": 512, "model": "tiny"}',
        2,
    )
    assert line.error is None
    assert line.prompt == "a cat"
    assert line.overrides == {
        "seed": 3,
        "steps": 20,
        "sampler": "dpmpp-2m",
        "width": 576,
        "guidance_scale": 7,
        "negative_prompt": "dogs",
        "num_images": 4,
        "batch_size": 2,
        "height": 512,
        "model": "tiny",
    }


def test_json_line_with_only_a_prompt():
    assert parse_line('{"prompt": " a cat "}', 1) == PromptLine(1, "a cat", {})


def test_json_null_for_optional_fields():
    line = parse_line('{"prompt": "a cat", "seed": null, "width": null, "height": null}', 1)
    assert line.error is None
    assert line.overrides == {"seed": None, "width": None, "height": None}


# -- per-line errors ----------------------------------------------------------------------


def assert_error(line: PromptLine, number: int, *parts: str):
    assert line.error is not None, line
    assert line.error.startswith(f"line {number}: "), line.error
    assert "\n" not in line.error
    assert line.prompt == ""
    assert line.overrides == {}
    for part in parts:
        assert part in line.error, line.error


def test_unknown_tag_names_its_line_and_the_supported_tags():
    line = parse_line("--prompt a cat --foo 3", 7)
    assert_error(line, 7, "unknown tag --foo", "supported: --prompt, --negative_prompt")
    assert line.error.startswith("line 7: unknown tag --foo")


def test_unknown_tag_suggests_the_close_one():
    assert_error(parse_line("--prompt a cat --step 3", 1), 1, "did you mean --steps?")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("--prompt a cat --steps abc", "line 3: --steps needs a whole number, got 'abc'"),
        ("--prompt a cat --steps 2.5", "line 3: --steps needs a whole number, got '2.5'"),
        ("--prompt a cat --steps 30 40", "line 3: --steps needs a whole number, got '30 40'"),
        ("--prompt a cat --cfg_scale high", "line 3: --cfg_scale needs a number, got 'high'"),
        ("--prompt a cat --seed", "line 3: --seed needs a value"),
        ("--prompt a cat --n_iter 0", "line 3: --n_iter must be at least 1, got 0"),
        ("--prompt a cat --batch_size 0", "line 3: --batch_size must be at least 1, got 0"),
        ('--prompt "a cat', "line 3: cannot split the line into words: No closing quotation"),
    ],
)
def test_a1111_invalid_values(text, message):
    line = parse_line(text, 3)
    assert_error(line, 3)
    assert line.error == message


@pytest.mark.parametrize(
    ("text", "part"),
    [
        ("--prompt a cat --steps 0", "steps must be at least 1, got 0"),
        ("--prompt a cat --width 500", "width 500 is not a multiple of 64"),
        ("--prompt a cat --cfg_scale -1", "guidance scale must be a finite number >= 0"),
        ("--prompt a cat --sampler_name Heun", "unknown sampler 'Heun'"),
        ("--prompt a cat --model nope", "unknown model 'nope'"),
        ("--prompt a cat --seed 4294967295 --n_iter 2", "runs past"),
    ],
)
def test_a1111_values_are_checked_like_generation_config(text, part):
    assert_error(parse_line(text, 8), 8, part)


def test_invalid_json():
    line = parse_line('{"prompt": "a cat", "seed": 3', 4)
    assert_error(line, 4)
    assert line.error.startswith("line 4: invalid JSON: ")


def test_json_that_is_not_an_object():
    assert_error(parse_line('{"prompt": "a"} {}', 4), 4, "invalid JSON")


def test_unknown_json_key():
    line = parse_line('{"prompt": "a cat", "stepz": 20}', 5)
    assert_error(line, 5, "unknown key 'stepz'", "allowed: prompt, negative_prompt", "model")
    assert line.error.startswith("line 5: unknown key 'stepz'")


def test_a1111_key_in_json_gets_a_hint():
    line = parse_line('{"prompt": "a cat", "cfg_scale": 7}', 5)
    assert_error(line, 5, "unknown key 'cfg_scale' (did you mean 'guidance_scale'?)")


@pytest.mark.parametrize(
    ("text", "part"),
    [
        ('{"prompt": "a cat", "steps": "x"}', "'steps' must be an integer, got \"x\""),
        ('{"prompt": "a cat", "steps": 20.0}', "'steps' must be an integer, got 20.0"),
        ('{"prompt": "a cat", "seed": true}', "'seed' must be an integer, got true"),
        ('{"prompt": "a cat", "guidance_scale": "7"}', "'guidance_scale' must be a number"),
        ('{"prompt": "a cat", "guidance_scale": false}', "'guidance_scale' must be a number"),
        ('{"prompt": "a cat", "sampler": 1}', "'sampler' must be a string, got 1"),
        ('{"prompt": "a cat", "model": ["tiny"]}', "'model' must be a string"),
        ('{"prompt": 5}', "'prompt' must be a string, got 5"),
        ('{"prompt": "a cat", "steps": null}', "'steps' must be an integer, got null"),
        ('{"prompt": "a cat", "steps": 2000}', "steps must be at most 1000"),
        ('{"prompt": "a cat", "guidance_scale": NaN}', "finite number"),
        ('{"prompt": "a cat", "height": 100}', "height 100 is not a multiple of 64"),
    ],
)
def test_wrong_json_types_and_values(text, part):
    assert_error(parse_line(text, 6), 6, part)


@pytest.mark.parametrize(
    "text",
    [
        "--negative_prompt blurry --seed 1",
        '--prompt "" --seed 1',
        '--prompt "   "',
        '{"seed": 1}',
        '{"prompt": "  "}',
        "{}",
    ],
)
def test_missing_prompt(text):
    line = parse_line(text, 6)
    assert line == PromptLine(6, "", {}, "line 6: no prompt")


# -- clip skip and emphasis --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("--prompt a cat --clip_skip 2", {"clip_skip": 2}),
        ("--prompt a cat --emphasis no-norm", {"emphasis": "no-norm"}),
        (
            "--prompt a cat --emphasis No norm --clip_skip=3",
            {"emphasis": "No norm", "clip_skip": 3},
        ),
        ('{"prompt": "a cat", "clip_skip": 2}', {"clip_skip": 2}),
        ('{"prompt": "a cat", "emphasis": "off"}', {"emphasis": "off"}),
        (
            '{"prompt": "a cat", "emphasis": "Ignore", "clip_skip": 1}',
            {"emphasis": "Ignore", "clip_skip": 1},
        ),
    ],
)
def test_clip_skip_and_emphasis_in_both_syntaxes(text, expected):
    line = parse_line(text, 2)
    assert line == PromptLine(2, "a cat", expected)
    assert all(type(line.overrides[key]) is type(value) for key, value in expected.items())
    settings = GenerationConfig(prompt=line.prompt, **line.overrides)
    assert settings.clip_skip == expected.get("clip_skip", 1)
    assert settings.emphasis == emphasis_mode(expected.get("emphasis", "original"))


@pytest.mark.parametrize(
    ("text", "part"),
    [
        ("--prompt a cat --clip_skip two", "--clip_skip needs a whole number, got 'two'"),
        ("--prompt a cat --clip_skip 1.5", "--clip_skip needs a whole number, got '1.5'"),
        ("--prompt a cat --clip_skip 0", "clip skip must be from 1 (the last layer)"),
        ("--prompt a cat --emphasis loud", "emphasis must be one of original, no-norm"),
        ("--prompt a cat --emphasis", "--emphasis needs a value"),
        ("--prompt a cat --clipskip 2", "unknown tag --clipskip (did you mean --clip_skip?)"),
        ('{"prompt": "a cat", "clip_skip": 2.0}', "'clip_skip' must be an integer, got 2.0"),
        ('{"prompt": "a cat", "clip_skip": "2"}', "'clip_skip' must be an integer, got \"2\""),
        ('{"prompt": "a cat", "clip_skip": true}', "'clip_skip' must be an integer, got true"),
        ('{"prompt": "a cat", "clip_skip": 0}', "clip skip must be from 1 (the last layer)"),
        ('{"prompt": "a cat", "emphasis": 1.1}', "'emphasis' must be a string, got 1.1"),
        ('{"prompt": "a cat", "emphasis": "loud"}', "emphasis must be one of original"),
    ],
)
def test_bad_clip_skip_and_emphasis_fail_their_line(text, part):
    assert_error(parse_line(text, 7), 7, part)


def test_every_config_key_has_a_json_type():
    """A new GenerationConfig field must be given its JSON type here, or a JSON line
    could pass it any value until GenerationConfig looks at it."""
    typed = _INT_KEYS | _STR_KEYS | _NUMBER_KEYS | _SIZE_KEYS | _LIST_KEYS | _BOOL_KEYS
    assert set(CONFIG_KEYS) - typed == set()
    assert "--clip_skip" in _SUPPORTED_TAGS and "--emphasis" in _SUPPORTED_TAGS


# -- files --------------------------------------------------------------------------------


def test_file_mixing_all_three_kinds_with_comments_and_a_bad_line():
    path = write(
        "prompts.txt",
        "# a batch\n"
        "a red fox\n"
        "\n"
        '--prompt "a castle at dusk" --steps 30 --sampler_name "Euler a" --n_iter 2\n'
        "   # indented comment\n"
        '{"prompt": "a cat", "seed": 3, "width": 576}\n'
        "--prompt a dog --foo 1\n"
        '{"prompt": "a bird", "stepz": 3}\n'
        "--seed 4\n"
        "  a blue whale  \n",
    )
    lines = read_prompts_file(path)
    assert [line.line_number for line in lines] == [2, 4, 6, 7, 8, 9, 10]
    assert lines[0] == PromptLine(2, "a red fox", {})
    assert lines[1] == PromptLine(
        4, "a castle at dusk", {"steps": 30, "sampler": "Euler a", "num_images": 2}
    )
    assert lines[2] == PromptLine(6, "a cat", {"seed": 3, "width": 576})
    assert lines[3].error.startswith("line 7: unknown tag --foo")
    assert lines[4].error.startswith("line 8: unknown key 'stepz'")
    assert lines[5].error == "line 9: no prompt"
    assert lines[6] == PromptLine(10, "a blue whale", {})


def test_file_with_bom_and_crlf():
    path = write(
        "bom.txt",
        b'\xef\xbb\xbf--prompt a castle --seed 1\r\n# comment\r\n{"prompt": "a cat"}\r\na fox\r\n',
    )
    lines = read_prompts_file(path)
    assert lines == [
        PromptLine(1, "a castle", {"seed": 1}),
        PromptLine(3, "a cat", {}),
        PromptLine(4, "a fox", {}),
    ]


def test_a_file_of_only_bad_lines_does_not_raise():
    lines = read_prompts_file(write("bad.txt", "--foo 1\n{oops\n"))
    assert [line.error.split(":")[0] for line in lines] == ["line 1", "line 2"]


# -- file-level errors --------------------------------------------------------------------


def test_missing_file_raises():
    with pytest.raises(PromptsFileError, match="does not exist"):
        read_prompts_file("nope.txt")


def test_folder_raises(tmp_path):
    with pytest.raises(PromptsFileError, match="is a folder, not a file"):
        read_prompts_file(tmp_path)


def test_empty_file_raises():
    with pytest.raises(PromptsFileError, match="is empty; write one prompt per line"):
        read_prompts_file(write("empty.txt", "\n  \n"))


def test_only_comments_raises():
    with pytest.raises(PromptsFileError, match="has only comments and blank lines"):
        read_prompts_file(write("comments.txt", "# one\n\n   # two\n"))


def test_not_utf8_raises_with_the_line():
    with pytest.raises(PromptsFileError, match=r"not UTF-8 \(bad byte at line 2\)"):
        read_prompts_file(write("latin1.txt", "a cat\ncaf\xe9\n".encode("latin-1")))
