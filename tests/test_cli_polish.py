"""The CLI as a new user meets it: counters that count what this run makes, failures
and errors a script can read from --json, help that reads well, and a Ctrl-C that
leaves neither two blank lines nor an empty output folder behind."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import FAST

from sdgen.batch.progress import Progress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def lines_starting(text: str, prefix: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefix)]


# --- counters -------------------------------------------------------------------------


def test_a_shard_counts_the_images_it_makes(run_cli, hermetic):
    (hermetic / "five.txt").write_text("a cat\na dog\na horse\na cow\na duck\n")
    result = run_cli("--prompts-file", "five.txt", *FAST, "--seed", "100", "--shard", "1/2")
    assert result.exit_code == 0, result.stderr
    saved = lines_starting(result.stderr, "[")
    assert [line.split()[0] for line in saved] == ["[1/3]", "[2/3]", "[3/3]"]
    # the shard's images are the request's 0, 2 and 4: the counter is not their index
    assert ["-a-cat" in saved[0], "-a-horse" in saved[1], "-a-duck" in saved[2]] == [True] * 3
    bar = lines_starting(result.stderr, "image")
    assert [line.split(":")[0] for line in bar if "step 2/2" in line] == [
        "image 1/3",
        "image 2/3",
        "image 3/3",
    ]


def test_the_time_left_is_zero_at_the_last_step_when_lines_differ_in_steps(run_cli, hermetic):
    lines = [{"prompt": "long", "steps": 24}, {"prompt": "short", "steps": 1}]
    (hermetic / "mixed.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    result = run_cli("--prompts-file", "mixed.jsonl", *FAST[:6], "--seed", "1")
    assert result.exit_code == 0, result.stderr
    last = lines_starting(result.stderr, "image")[-1]
    assert last.startswith("image 2/2: step 1/1,") and last.endswith("ETA 00:00"), last


def test_progress_counts_each_images_own_steps():
    stream, clock = io.StringIO(), Clock()
    progress = Progress(2, 10, stream=stream, interactive=False, interval=100.0, clock=clock)
    for image, steps in ((0, 10), (1, 4)):
        for step in range(steps):
            clock.now += 1.0
            progress(image, step, steps)
    assert stream.getvalue().splitlines() == [
        "image 1/2: step 10/10, 1.00 it/s, ETA 00:10",
        "image 2/2: step 4/4, 1.00 it/s, ETA 00:00",
    ]


def test_images_denoised_together_share_one_line():
    stream, clock = io.StringIO(), Clock()
    progress = Progress(4, 2, stream=stream, interactive=False, interval=100.0, clock=clock)
    for batch in ((7, 8), (9, 10)):  # the request's indices; the run numbers them 1..4
        for step in range(2):
            for image in batch:
                clock.now += 0.5
                progress(image, step, 2)
    assert stream.getvalue().splitlines() == [
        "images 1-2/4: step 2/2, 2.00 it/s, ETA 00:02",
        "images 3-4/4: step 2/2, 2.00 it/s, ETA 00:00",
    ]


def test_the_live_bar_ends_its_line_once_per_batch():
    stream, clock = io.StringIO(), Clock()
    progress = Progress(2, 3, stream=stream, interactive=True, clock=clock)
    for step in range(3):
        for image in (0, 1):
            clock.now += 0.5
            progress(image, step, 3)
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.endswith("ETA 00:00\n")
    assert text.rsplit("\r", 1)[1].startswith("images 1-2/2 |########################| 3/3")


# --- --json -----------------------------------------------------------------------------


def test_json_lists_each_failed_line_with_its_number_and_reason(run_cli, hermetic):
    (hermetic / "p.txt").write_text("a cat\n--prompt a dog --colour red\n\nan owl\n")
    result = run_cli("--prompts-file", "p.txt", *FAST, "--seed", "3", "--json")
    assert result.exit_code == 3, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["done"], summary["failed"]) == (2, 1)
    [failure] = summary["failures"]
    assert failure["line"] == 2 and "--colour" in failure["reason"]
    assert (failure["indices"], failure["paths"], failure["count"]) == ([], [], 1)
    assert f"line 2: {failure['reason']}" in result.stderr


def test_json_of_a_run_without_failures_has_an_empty_list(run_cli):
    result = run_cli("ok", *FAST, "--seed", "1", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["failures"] == []


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["--steps", "many"], 2, "'many' is not a valid integer"),  # click's own check
        (["--model", "no-such-model"], 2, "no-such-model"),  # an SdgenError
    ],
)
def test_a_usage_error_with_json_is_an_object_on_stdout_too(run_cli, args, code, words):
    result = run_cli("generate", "a cat", "--json", *FAST[2:], *args)
    assert result.exit_code == code
    error = json.loads(result.stdout)
    assert error["exit_code"] == code and words in error["error"]
    assert result.stderr.strip() == f"Error: {error['error']}"


def test_without_json_an_error_prints_nothing_on_stdout(run_cli):
    result = run_cli("a cat", *FAST, "--steps", "many")
    assert result.exit_code == 2 and result.stdout == ""


# --- help -------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [[], ["generate"], ["models"], ["tokens"], ["import"]])
def test_dash_h_is_help(run_cli, command):
    short, long = run_cli(*command, "-h"), run_cli(*command, "--help")
    assert short.exit_code == 0 and short.stdout.startswith("Usage: sdgen")
    assert short.stdout == long.stdout


def test_sdgen_alone_shows_the_help(run_cli):
    result = run_cli()
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout == run_cli("--help").stdout


def test_generate_help_puts_every_option_under_a_heading(run_cli):
    text = run_cli("generate", "--help").stdout
    headings = [
        line[:-1] for line in text.splitlines() if line and line[0] != " " and line[-1] == ":"
    ]
    assert headings == [
        "Prompt and text",
        "Sampling",
        "Start from an image",
        "Sweeps",
        "Output",
        "Model and weights",
        "Batch and distribution",
        "Runtime",
        "Reporting",
    ]
    sections = dict(zip(headings, text.split("\n\n")[-len(headings) :], strict=True))
    assert "--sampler" in sections["Sampling"] and "--outdir" in sections["Output"]
    assert "--sweep" in sections["Sweeps"] and "--yes" in sections["Sweeps"]
    assert "--init-image" in sections["Start from an image"]
    assert "--hires-denoise" in sections["Start from an image"]
    assert "--shard" in sections["Batch and distribution"] and "-h, --help" in sections["Reporting"]


def test_help_in_every_form_does_not_import_tensorflow():
    code = (
        "import sys; from sdgen.cli import main\n"
        "for args in ([], ['-h'], ['generate', '-h'], ['x', '-h']):\n"
        "    try:\n        main(args)\n    except SystemExit as exit_:\n"
        "        assert exit_.code in (0, None), (args, exit_.code)\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


# --- Ctrl-C -----------------------------------------------------------------------------


@pytest.fixture
def ctrl_c_at_the_first_step(monkeypatch):
    def interrupt(*_args):
        raise KeyboardInterrupt

    monkeypatch.setattr(Progress, "__call__", interrupt)


def test_ctrl_c_prints_at_most_one_blank_line(run_cli, ctrl_c_at_the_first_step):
    result = run_cli("a cat", *FAST, "--seed", "1")
    assert result.exit_code == 130
    before, _ = result.stderr.rsplit("Error: interrupted", 1)
    assert not before.endswith("\n\n\n"), repr(result.stderr)


def test_ctrl_c_before_the_first_image_leaves_no_empty_folder(
    run_cli, hermetic, ctrl_c_at_the_first_step
):
    result = run_cli("a cat", *FAST, "--seed", "1", "--outdir", "new/deeper")
    assert result.exit_code == 130
    assert not (hermetic / "new").exists()
    (hermetic / "mine").mkdir()  # a folder that was there before is kept
    result = run_cli("a cat", *FAST, "--seed", "1", "--outdir", "mine")
    assert result.exit_code == 130 and (hermetic / "mine").is_dir()


def test_ctrl_c_that_tensorflow_turns_into_another_error_is_still_an_interrupt(
    run_cli, monkeypatch
):
    def interrupt_inside_c_code(*_args):
        # what a real Ctrl-C during a TensorFlow call gave: the KeyboardInterrupt comes
        # out of the C code as a SystemError, which the executor reports as a failure
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except KeyboardInterrupt:
            raise SystemError("listobject.c:338: bad argument to internal function") from None

    monkeypatch.setattr(Progress, "__call__", interrupt_inside_c_code)
    result = run_cli("a cat", *FAST, "--seed", "1")
    assert result.exit_code == 130, result.stderr
    assert result.stderr.rstrip().endswith("Error: interrupted; finished images were kept")
    assert "SystemError" not in result.stderr
