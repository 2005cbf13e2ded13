"""Batch runs as a user sees them: image numbers in the progress of a prompts file, the
grid of a resumed run, contact sheets with sub-folder names, and memory over a long run."""

from __future__ import annotations

import gc
import re
import weakref
from pathlib import Path
from typing import ClassVar

import numpy as np
from conftest import FAST, pixels

from sdgen.batch.plan import plan
from sdgen.batch.run import Saved, run
from sdgen.batch.work import Job, OutputOptions
from sdgen.config import GenerationConfig
from sdgen.pipeline import GeneratedImage


def test_progress_counts_images_across_the_lines_of_a_prompts_file(run_cli, hermetic):
    (hermetic / "p.txt").write_text("a cat\n--prompt a dog --n_iter 2\na cow\n")
    result = run_cli("--prompts-file", "p.txt", *FAST, "--seed", "1")
    assert result.exit_code == 0, result.stderr
    numbers = re.findall(r"^image (\d+)/(\d+): step 2/2", result.stderr, re.MULTILINE)
    assert numbers == [("1", "4"), ("2", "4"), ("3", "4"), ("4", "4")]


def test_grid_of_a_resumed_run_keeps_the_images_in_order(run_cli, hermetic):
    args = ["a boat", *FAST, "--seed", "4", "--num-images", "4"]
    assert run_cli(*args, "--shard", "1/2").exit_code == 0  # images 0 and 2
    result = run_cli(*args, "--grid")  # makes 1 and 3, reads 0 and 2 back
    assert result.exit_code == 0, result.stderr
    images = sorted((hermetic / "outputs").glob("0000?-*-a-boat.png"))
    assert len(images) == 4
    grid = pixels(next((hermetic / "outputs").glob("*-grid.png")))
    cells = [grid[:64, :64], grid[:64, 64:], grid[64:, :64], grid[64:, 64:]]
    for cell, path in zip(cells, images, strict=True):
        assert np.array_equal(cell, pixels(path)), path.name


def test_contact_sheet_shows_images_in_sub_folders(run_cli, hermetic):
    (hermetic / "p.txt").write_text("a cat\na dog\n")
    template = "line{line}/{index:05d}-{seed}.png"
    result = run_cli("--prompts-file", "p.txt", *FAST, "--seed", "1", "--name-template", template)
    assert result.exit_code == 0, result.stderr
    outputs = hermetic / "outputs"
    made = sorted(p.relative_to(outputs).as_posix() for p in outputs.rglob("*.png"))
    assert [name.split("/")[0] for name in made] == ["line1", "line2"]
    page = (outputs / "index.html").read_text()
    for name in made:
        assert f'src="{name}"' in page
    sheets = sorted(p.relative_to(outputs).as_posix() for p in outputs.rglob("index.html"))
    assert sheets == ["index.html"]


class _Executor:
    """Stands in for a real executor: images of random pixels, one by one."""

    load_seconds: ClassVar[dict] = {}

    def __init__(self):
        self.made = []

    def run(self, work, callback=None):
        rng = np.random.default_rng(0)
        for job, ks in work:
            for k in ks:
                image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
                self.made.append(weakref.ref(image))
                yield job, GeneratedImage(k, job.config.seed + k, image)
                del image


def _plan(folder: Path, grid: bool):
    config = GenerationConfig("a cat", width=64, height=64, steps=1, seed=1, num_images=3)
    output = OutputOptions(outdir=folder, grid=grid)
    return plan([Job(config, "tiny")], output), output


def test_finished_images_are_not_kept_in_memory_without_a_grid(hermetic):
    the_plan, output = _plan(hermetic / "out", grid=False)
    executor = _Executor()
    events = run(the_plan, output, executor)
    saved = [next(events), next(events)]
    gc.collect()
    assert all(isinstance(event, Saved) for event in saved)
    assert executor.made[0]() is None  # the first image's pixels are gone once saved
    assert len(list(events)) == 1


def test_a_grid_still_gets_every_image(hermetic):
    the_plan, output = _plan(hermetic / "out", grid=True)
    assert len([event for event in run(the_plan, output, _Executor()) if isinstance(event, Saved)])
    grid = pixels(the_plan.grid_path)
    files = sorted(p for p in (hermetic / "out").glob("*.png") if "grid" not in p.name)
    assert np.array_equal(grid[:64, :64], pixels(files[0]))
    assert np.array_equal(grid[:64, 64:128], pixels(files[1]))
    assert np.array_equal(grid[64:, :64], pixels(files[2]))


def test_a_resumed_run_removes_what_a_killed_one_left_half_written(hermetic):
    the_plan, output = _plan(hermetic / "out", grid=False)
    first = the_plan.images[0].path
    stale = first.with_name(f".{first.name}.abc123.tmp")  # a kill inside write_atomically
    stale.write_bytes(b"half a png")
    other = first.with_name(".not-ours.png.abc123.tmp")
    other.write_bytes(b"")
    assert all(isinstance(event, Saved) for event in run(the_plan, output, _Executor()))
    assert not stale.exists() and other.exists()
    assert pixels(first).shape == (64, 64, 3)
