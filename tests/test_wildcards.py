"""Dynamic prompts and wildcards (``--prompt-mode``, ``--wildcards``): random prompts that
follow the image's seed, combinatorial jobs, wildcard files, their errors, and what the
manifest and infotext record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import FAST, only_line

from sdgen.errors import DynamicPromptError
from sdgen.output.manifest import read_manifest
from sdgen.output.png import parse_infotext, read_infotext
from sdgen.text.dynamic import MAX_COMBINATIONS, DynamicPrompts


@pytest.fixture
def wildcards(tmp_path) -> Path:
    """A wildcards folder: ``color`` (with a comment and a blank line), ``sub/animal``
    (one line of which uses ``__color__``)."""
    folder = tmp_path / "wildcards"
    (folder / "sub").mkdir(parents=True)
    (folder / "color.txt").write_text("red\n# not a colour\n\nblue\n", encoding="utf-8")
    (folder / "sub" / "animal.txt").write_text("cat\n__color__ dog\n", encoding="utf-8")
    return folder


def manifest(folder: Path) -> list[dict]:
    return sorted(read_manifest(folder), key=lambda record: record["index"])


# the library


def test_random_expansion_follows_the_seed(wildcards):
    dynamic = DynamicPrompts("random", wildcards)
    template = dynamic.template("a {tiny|huge} __sub/animal__ at {dawn|dusk|noon}")
    seeds = range(40)
    first = [dynamic.expand(template, seed) for seed in seeds]
    again = DynamicPrompts("random", wildcards)  # a new process: nothing carried over
    assert [again.expand(template, seed) for seed in seeds] == first
    every = set(DynamicPrompts("combinatorial", wildcards).combinations(template))
    assert set(first) <= every
    assert len(set(first)) > len(every) // 2  # different seeds, different prompts


def test_combinations_come_in_order(wildcards):
    dynamic = DynamicPrompts("combinatorial", wildcards)
    template = dynamic.template("{a|b} {x|y|z}", "{blurry|dark}")
    got = dynamic.combinations(template)
    prompts = [f"{first} {second}" for first in "ab" for second in "xyz"]
    assert got == [(prompt, negative) for prompt in prompts for negative in ("blurry", "dark")]


def test_wildcard_files_nested_and_referring_to_others(wildcards):
    dynamic = DynamicPrompts("combinatorial", wildcards)
    template = dynamic.template("__sub/animal__, __color__")
    assert [prompt for prompt, _ in dynamic.combinations(template)] == [
        "blue dog, blue",
        "blue dog, red",
        "red dog, blue",
        "red dog, red",
        "cat, blue",
        "cat, red",
    ]
    assert {name for name, _ in template.wildcards} == {"color", "sub/animal"}


def test_plain_text_is_no_template(wildcards):
    assert DynamicPrompts("random", wildcards).template("a plain (fox:1.2) [a|b]") is None
    assert DynamicPrompts("plain", wildcards).template("a {b|c} __color__") is None


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("a __nope__", "unknown wildcard __nope__: no nope.txt with any line in {folder}"),
        ("a __colr__", "did you mean __color__?"),
        ("a {cat|__sub/nope__}", "unknown wildcard __sub/nope__"),  # in any branch
        ("a {b|c", "cannot read the dynamic prompt 'a {b|c': Expected end of text"),
    ],
)
def test_template_errors(wildcards, prompt, message):
    for mode in ("random", "combinatorial"):
        with pytest.raises(DynamicPromptError) as error:
            DynamicPrompts(mode, wildcards).template(prompt)
        assert message.replace("{folder}", str(wildcards)) in str(error.value)


def test_too_many_combinations_say_how_many(wildcards):
    dynamic = DynamicPrompts("combinatorial", wildcards)
    template = dynamic.template("{a|b}" * 10)  # 1024
    with pytest.raises(
        DynamicPromptError, match=f"makes 1024 prompts, and at most {MAX_COMBINATIONS} are made"
    ):
        dynamic.combinations(template)
    assert len(dynamic.combinations(dynamic.template("{a|b}" * 9))) == 512
    with pytest.raises(DynamicPromptError, match="makes more than 10000 prompts"):
        dynamic.combinations(dynamic.template("{a|b}" * 14))  # counted no further


# the command line


def test_random_prompts_per_image_recorded_and_resumed(run_cli, hermetic, wildcards):
    template = "a {tiny|huge|red|blue} __sub/animal__"
    args = [template, *FAST, "--prompt-mode", "random", "--wildcards", wildcards]
    args += ["--num-images", "3", "--seed", "11", "--negative-prompt", "{dark|blurry}"]
    result = run_cli(*args)
    assert result.exit_code == 0, result.stderr
    records = manifest(hermetic / "outputs")
    dynamic = DynamicPrompts("random", wildcards)
    expected = [
        dynamic.expand(dynamic.template(template, "{dark|blurry}"), 11 + k) for k in range(3)
    ]
    assert [(r["prompt"], r["negative_prompt"]) for r in records] == expected
    for record in records:
        assert record["prompt_template"] == template
        assert record["negative_prompt_template"] == "{dark|blurry}"
        assert record["prompt_mode"] == "random"
        info = parse_infotext(read_infotext(hermetic / "outputs" / record["file"]))
        assert (info["prompt"], info["negative_prompt"]) == (
            record["prompt"],
            record["negative_prompt"],
        )
    again = run_cli(*args)
    assert again.exit_code == 0, again.stderr
    assert "3 image(s) already made by an earlier run: skipped" in again.stderr


def test_an_unseeded_random_run_resumes_with_its_seeds(run_cli, hermetic, wildcards):
    args = ["a {red|blue|green|white} __sub/animal__", *FAST, "--prompt-mode", "random"]
    args += ["--wildcards", wildcards, "--num-images", "2"]
    assert run_cli(*args, "--shard", "1/2").exit_code == 0  # image 0 only, a random seed
    [first] = manifest(hermetic / "outputs")
    result = run_cli(*args)  # the rest of the same request: its seed, not a new one
    assert result.exit_code == 0, result.stderr
    assert "1 image(s) already made by an earlier run: skipped" in result.stderr
    records = manifest(hermetic / "outputs")
    assert [r["seed"] for r in records] == [first["seed"], first["seed"] + 1]
    dynamic = DynamicPrompts("random", wildcards)
    template = dynamic.template(args[0])
    assert [r["prompt"] for r in records] == [
        dynamic.expand(template, r["seed"])[0] for r in records
    ]


def test_combinatorial_makes_a_job_per_expansion(run_cli, hermetic, wildcards):
    result = run_cli(
        "a {red|blue} fox", *FAST, "--prompt-mode", "combinatorial", "--seed", "3", "--json"
    )
    assert result.exit_code == 0, result.stderr
    images = json.loads(result.stdout)["images"]
    assert [(i["prompt"], i["seed"]) for i in images] == [("a red fox", 3), ("a blue fox", 3)]
    assert {i["prompt_template"] for i in images} == {"a {red|blue} fox"}
    assert "negative_prompt_template" not in images[0]


def test_each_line_of_a_prompts_file_expands(run_cli, hermetic, wildcards):
    prompts = hermetic / "prompts.txt"
    prompts.write_text("__color__ sky\na plain line\n", encoding="utf-8")
    result = run_cli(
        "--prompts-file", prompts, *FAST, "--prompt-mode", "combinatorial",
        "--wildcards", wildcards, "--seed", "1",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    records = manifest(hermetic / "outputs")
    assert [(r["prompt"], r["line"]) for r in records] == [
        ("blue sky", 1),
        ("red sky", 1),
        ("a plain line", 2),
    ]
    assert "prompt_template" not in records[2]


def test_plain_mode_leaves_braces_and_underscores(run_cli, hermetic, wildcards):
    result = run_cli("a {red|blue} __color__", *FAST, "--seed", "2", "--wildcards", wildcards)
    assert result.exit_code == 0, result.stderr
    [record] = manifest(hermetic / "outputs")
    assert record["prompt"] == "a {red|blue} __color__"
    assert "prompt_template" not in record and "prompt_mode" not in record


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["a __nope__"], "unknown wildcard __nope__: no nope.txt with any line in {folder}"),
        (["a {b|c"], "cannot read the dynamic prompt 'a {b|c'"),
        (
            ["{a|b}" * 10, "--prompt-mode", "combinatorial"],
            "makes 1024 prompts, and at most 1000 are made",
        ),
        (["a cat", "--negative-prompt", "__nope__"], "unknown wildcard __nope__"),
    ],
)
def test_bad_templates_exit_2_before_any_image(run_cli, hermetic, wildcards, args, message):
    options = ["--prompt-mode", "random", "--wildcards", wildcards]
    result = run_cli(*args[:1], *FAST, *options, *args[1:])
    assert result.exit_code == 2
    line = only_line(result.stderr)
    assert line.startswith("Error: ") and message.replace("{folder}", str(wildcards)) in line
    assert not (hermetic / "outputs").exists()


def test_a_missing_wildcards_folder_is_named(run_cli, hermetic):
    result = run_cli("a __color__ fox", *FAST, "--prompt-mode", "random")
    assert result.exit_code == 2
    default = Path(hermetic.parent / "sdgen-home" / "wildcards")
    assert only_line(result.stderr) == (
        f"Error: the prompt uses the wildcard __color__, but the wildcards folder {default} "
        "does not exist; create it or pass --wildcards DIR"
    )
    assert not (hermetic / "outputs").exists()


def test_a_bad_line_of_a_prompts_file_is_named(run_cli, hermetic, wildcards):
    prompts = hermetic / "prompts.txt"
    prompts.write_text("a {fine|good} line\na __missing__ line\n", encoding="utf-8")
    result = run_cli(
        "--prompts-file", prompts, *FAST, "--prompt-mode", "random", "--wildcards", wildcards
    )
    assert result.exit_code == 2
    assert only_line(result.stderr).startswith("Error: line 2: unknown wildcard __missing__")
    assert not (hermetic / "outputs").exists()
