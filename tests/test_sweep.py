"""Sweeps (``--sweep``, A1111's X/Y/Z plot): axes and ranges, cells in index order,
labelled grids, resume, the contact sheet's tables, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import FAST, pixels

from sdgen.batch.work import Job
from sdgen.config import GenerationConfig
from sdgen.errors import UsageError
from sdgen.output.labelled_grid import labelled_grid
from sdgen.output.manifest import read_manifest
from sdgen.sweep import expand, parse_axes

# --- axes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "values"),
    [
        ("steps=10-40:10", (10, 20, 30, 40)),
        ("steps=10-40 (+15)", (10, 25, 40)),
        ("steps=40-10:-15", (40, 25, 10)),
        ("steps=5, 7 ,9", (5, 7, 9)),
        ("guidance-scale=3-9(4)", (3.0, 5.0, 7.0, 9.0)),
        ("cfg=1-2 [3]", (1.0, 1.5, 2.0)),
        ("guidance-scale=0.5-1.5:0.5,7", (0.5, 1.0, 1.5, 7.0)),
        ("size=64x128,128x64", ((64, 128), (128, 64))),
        ('prompt-sr=cat,"dog, running"', ("cat", "dog, running")),
    ],
)
def test_axis_values_and_ranges(spec, values):
    (axis,) = parse_axes([spec])
    assert axis.values == values


def test_axis_labels_name_the_setting_as_a1111_does():
    steps, sampler, sr = parse_axes(["steps=20", "sampler=euler-a", "prompt-sr=cat,dog"])
    assert steps.cell_label(0) == "Steps: 20"
    assert sampler.cell_label(0) == "Sampler: Euler a"
    assert sr.cell_label(1) == "dog"  # prompt S/R cells are labelled with the text itself


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (["steps=0"], "steps=0: 0: steps must be at least 1"),
        (["steps=ten"], "'ten' is not a whole number or a range"),
        (["steps=1-3:0.5"], "gives 1.5, not a whole number"),
        (["steps=1-3:-1"], "never reaches its end"),
        (["sampler=nosuch"], "'nosuch'"),
        (["width=100"], "not a multiple of 64"),
        (["model=nosuch"], "unknown model 'nosuch'"),
        (["colour=red"], "'colour' is not an option that can be swept"),
        (["steps"], "write KEY=V1,V2"),
        (["steps="], "no values"),
        (["steps=1", "steps=2"], "steps is swept twice"),
        (["size=64x64", "width=64"], "swept twice"),
        (["steps=1", "cfg=1", "seed=1", "clip-skip=1"], "at most 3 axes"),
        (["prompt-sr=cat"], "prompt-sr takes the text to find"),
        (["steps=1-1000000000:1"], "holds 1000000000 values"),
    ],
)
def test_bad_axes_are_refused_naming_the_value(specs, message):
    with pytest.raises(UsageError, match=None) as caught:
        parse_axes(specs)
    assert message in str(caught.value)


def test_cells_run_x_fastest_and_prompt_sr_replaces_in_both_prompts():
    job = Job(GenerationConfig("a cat on a mat", negative_prompt="ugly cat", seed=1), "tiny")
    axes = parse_axes(["prompt-sr=cat,dog", "steps=2,3"])
    cells = expand(job, axes)
    assert [(c.config.prompt, c.config.steps) for c in cells] == [
        ("a cat on a mat", 2),
        ("a dog on a mat", 2),
        ("a cat on a mat", 3),
        ("a dog on a mat", 3),
    ]
    assert cells[1].config.negative_prompt == "ugly dog"
    assert [c.sweep.position for c in cells] == [(0, 0), (1, 0), (0, 1), (1, 1)]
    assert len({c.sweep.sweep_id for c in cells}) == 1
    with pytest.raises(UsageError, match="'horse' is not in the prompt"):
        expand(job, parse_axes(["prompt-sr=horse,dog"]))


def test_a_cell_whose_settings_clash_is_named():
    # fine on its own, but a prompts-file line asks for 2 images from that seed
    job = Job(GenerationConfig("x", num_images=2), "tiny")
    with pytest.raises(UsageError, match="sweep cell Seed: 4294967295: seed 4294967295 "):
        expand(job, parse_axes(["seed=4294967295"]))


# --- the labelled grid ----------------------------------------------------------------


def test_labelled_grid_draws_labels_enlarges_small_cells_and_greys_missing_ones():
    red = np.zeros((64, 64, 3), np.uint8)
    red[..., 0] = 255
    cells = [[red, None], [red, red]]
    grid = labelled_grid(cells, ["Steps: 1", "Steps: 2"], ["CFG scale: 3", "CFG scale: 7"], "Z")
    height, width, _ = grid.shape
    # two 128 px columns (64 px cells doubled) right of the row labels, two rows below
    # the title and the column labels
    left, top = width - 256, height - 256
    assert left > 0 and top > 0
    assert (grid[top : top + 128, left : left + 128] == red[0, 0]).all()
    assert (grid[top : top + 128, left + 128 :] == 200).all()  # the missing cell
    assert (grid[:top, left:] < 128).any()  # text above the columns
    assert (grid[top:, :left] < 128).any()  # text left of the rows
    wide = labelled_grid([[red] * 30], [f"a long label for column {i}" for i in range(30)])
    assert wide.shape[1] == 30 * 128  # labels wrap to their column instead of widening it


# --- the CLI --------------------------------------------------------------------------


def _sweep(run_cli, *extra):
    return run_cli(
        "a red circle", *FAST, "--seed", "5", "--sweep", "steps=1,2",
        "--sweep", "cfg=1,7", "--outdir", "out", "--json", *extra,
    )  # fmt: skip


def test_a_sweep_makes_ordinary_images_a_labelled_grid_and_resumes(run_cli, hermetic):
    result = _sweep(run_cli)
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    records = summary["images"]
    assert [(r["steps"], r["guidance_scale"]) for r in records] == [
        (1, 1.0),
        (2, 1.0),
        (1, 7.0),
        (2, 7.0),
    ]
    assert {r["seed"] for r in records} == {5}
    assert [r["sweep"]["cell"] for r in records] == [[0, 0], [1, 0], [0, 1], [1, 1]]
    assert records[3]["sweep"]["labels"] == ["Steps: 2", "CFG scale: 7"]
    (grid,) = summary["grids"]
    grid_pixels = pixels(hermetic / grid)
    assert grid_pixels.shape[1] > 2 * 128 and grid_pixels.shape[0] > 2 * 128
    # the last cell is the image itself (each 64 px image is shown doubled)
    last = pixels(hermetic / records[3]["path"])
    corner = grid_pixels[-128:, -128:]
    assert np.array_equal(corner[::2, ::2], last)

    # a cell is an ordinary image: the same as making it directly
    direct = run_cli("a red circle", *FAST, "--seed", "5", "--guidance-scale", "7",
                     "--out", "direct.png")  # fmt: skip
    assert direct.exit_code == 0, direct.stderr
    assert np.array_equal(pixels(hermetic / "direct.png"), last)

    # the contact sheet lays the sweep out as a table
    page = (hermetic / "out" / "index.html").read_text()
    assert '<table class="sweep">' in page and "<th>CFG scale: 7</th>" in page

    # rerun: nothing to make; lose one cell: only it is made, and the grid is the same
    again = _sweep(run_cli)
    assert json.loads(again.stdout)["done"] == 0
    (hermetic / records[1]["path"]).unlink()
    resumed = _sweep(run_cli)
    summary = json.loads(resumed.stdout)
    assert (summary["done"], summary["skipped"]) == (1, 3)
    assert np.array_equal(pixels(hermetic / grid), grid_pixels)


def test_without_a_seed_every_cell_shares_one_seed_also_when_resumed(run_cli, hermetic):
    args = ("a red circle", *FAST, "--sweep", "cfg=1,3,7", "--outdir", "out", "--json")
    first = json.loads(run_cli(*args).stdout)["images"]
    (seed,) = {record["seed"] for record in first}
    (hermetic / first[2]["path"]).unlink()  # as if the run had been killed before it
    resumed = json.loads(run_cli(*args).stdout)
    assert resumed["done"] == 1
    assert {record["seed"] for record in resumed["images"]} == {seed}
    manifest = read_manifest(hermetic / "out")
    assert all(record["seed"] == seed for record in manifest)


def test_three_axes_give_one_grid_per_z_value(run_cli, hermetic):
    result = run_cli(
        "a red circle", *FAST, "--seed", "1", "--sweep", "steps=1,2", "--sweep",
        "prompt-sr=red,blue", "--sweep", "sampler=euler,ddim", "--outdir", "out", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert len(summary["images"]) == 8
    assert len(summary["grids"]) == 2
    assert [r["prompt"] for r in summary["images"][:4]] == [
        "a red circle",
        "a red circle",
        "a blue circle",
        "a blue circle",
    ]


def test_dynamic_prompts_and_sweeps_combine(run_cli, hermetic):
    # combinatorial: a sweep (and its grid) per expansion; random: one expansion, from the
    # shared seed, for every cell
    combined = run_cli(
        "a {red|blue} circle", *FAST, "--seed", "3", "--prompt-mode", "combinatorial",
        "--sweep", "cfg=1,7", "--outdir", "combined", "--json",
    )  # fmt: skip
    assert combined.exit_code == 0, combined.stderr
    summary = json.loads(combined.stdout)
    assert [r["prompt"] for r in summary["images"]] == ["a red circle"] * 2 + ["a blue circle"] * 2
    assert len(summary["grids"]) == 2
    random = run_cli(
        "a {red|green|blue|white|black} circle", *FAST, "--prompt-mode", "random",
        "--sweep", "cfg=1,3,7", "--outdir", "random", "--json",
    )  # fmt: skip
    assert random.exit_code == 0, random.stderr
    images = json.loads(random.stdout)["images"]
    assert len(images) == 3 and len({r["prompt"] for r in images}) == 1
    assert len({r["seed"] for r in images}) == 1


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        ("steps=0,10", "--sweep steps=0,10: 0: steps must be at least 1, got 0"),
        ("batch-size=1,2", "'batch-size' is not an option that can be swept"),
        ("seed=1-1001", "this sweep makes 1001 images, more than 1000; add --yes"),
    ],
)
def test_bad_sweeps_exit_2_before_any_image(run_cli, hermetic, sweep, message):
    result = run_cli("a red circle", *FAST, "--sweep", sweep, "--outdir", "out")
    assert result.exit_code == 2
    assert result.stderr.strip() == f"Error: {message}" or message in result.stderr
    assert result.stderr.count("\n") == 1
    assert not (hermetic / "out").exists()
