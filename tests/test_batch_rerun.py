"""Running a command again: grids and sheets never block a rerun, other settings never
land on an earlier file, and seeds follow the rule users expect (a finished request
without --seed makes new images; an unfinished one resumes with its own seeds)."""

from __future__ import annotations

import json

import numpy as np
from conftest import FAST, RandomPixelsExecutor, pixels, png_files

from sdgen.batch.plan import plan
from sdgen.batch.run import run
from sdgen.batch.work import Job, OutputOptions
from sdgen.config import GenerationConfig
from sdgen.output.manifest import read_manifest
from sdgen.output.png import parse_infotext, read_infotext, save_png

#: The README's first example, made cheap: 64 px, 2 steps.
LIGHTHOUSE = [
    "a lighthouse on a cliff at dusk",
    *FAST,
    "--seed",
    "42",
    "--num-images",
    "2",
    "--sampler",
    "dpmpp-2m",
    "--grid",
]


def images(folder):
    return [path for path in png_files(folder) if not path.stem.endswith("-grid")]


def test_the_readme_example_runs_twice(run_cli, hermetic):
    first = run_cli(*LIGHTHOUSE)
    assert first.exit_code == 0, first.stderr
    outputs = hermetic / "outputs"
    [grid] = outputs.glob("*-grid.png")
    made = {path.name: path.read_bytes() for path in outputs.iterdir()}
    again = run_cli(*LIGHTHOUSE)
    assert again.exit_code == 0, again.stderr
    assert "2 image(s) already made by an earlier run: skipped" in again.stderr
    assert f"grid {grid.relative_to(hermetic)}" in again.stderr
    # with --seed a rerun is a no-op: no file, grid or manifest line changes
    after = {path.name: path.read_bytes() for path in outputs.iterdir()}
    assert {name: data for name, data in after.items() if name != "index.html"} == {
        name: data for name, data in made.items() if name != "index.html"
    }


def test_a_grid_is_rewritten_when_the_run_s_images_change(run_cli, hermetic):
    args = ["a boat", *FAST, "--seed", "4", "--num-images", "2", "--grid"]
    assert run_cli(*args, "--shard", "1/2").exit_code == 0  # a grid of image 0 alone
    [grid] = (hermetic / "outputs").glob("*-grid.png")
    assert pixels(grid).shape == (64, 64, 3)
    result = run_cli(*args)  # makes image 1: the grid now holds both
    assert result.exit_code == 0, result.stderr
    assert [p.name for p in (hermetic / "outputs").glob("*-grid.png")] == [grid.name]
    both = pixels(grid)
    assert both.shape == (64, 128, 3)
    for cell, path in zip((both[:, :64], both[:, 64:]), images(hermetic / "outputs"), strict=True):
        assert np.array_equal(cell, pixels(path))


def test_a_prompts_file_and_an_out_file_with_a_grid_run_twice(run_cli, hermetic):
    (hermetic / "p.txt").write_text("a cat\na dog\n")
    for args in (
        ["--prompts-file", "p.txt", *FAST, "--seed", "1", "--grid"],
        ["a cow", *FAST, "--seed", "2", "--num-images", "2", "--out", "cow.png", "--grid"],
    ):
        assert run_cli(*args).exit_code == 0
        again = run_cli(*args)
        assert again.exit_code == 0, again.stderr
        assert "skipped 2" in again.stderr
    assert [p.name for p in hermetic.glob("*-grid.png")] == ["cow-0-grid.png"]
    assert len(read_manifest(hermetic)) == 2


def test_another_setting_gets_the_next_number_and_never_touches_the_first(run_cli, hermetic):
    fox = ["a red fox in snow", *FAST, "--seed", "7"]
    assert run_cli(*fox).exit_code == 0
    outputs = hermetic / "outputs"
    [first] = images(outputs)
    assert first.name == "00000-7-a-red-fox-in-snow.png"
    kept = first.read_bytes()
    euler = run_cli(*fox, "--sampler", "euler")
    assert euler.exit_code == 0, euler.stderr
    assert [p.name for p in images(outputs)] == [first.name, "00001-7-a-red-fox-in-snow.png"]
    assert first.read_bytes() == kept
    infotexts = [parse_infotext(read_infotext(path)) for path in images(outputs)]
    assert infotexts[0]["Sampler"] != infotexts[1]["Sampler"] == "Euler"
    # each is found again by its identity, wherever its number put it
    for args in (fox, [*fox, "--sampler", "euler"]):
        again = run_cli(*args)
        assert again.exit_code == 0 and "skipped 1" in again.stderr, again.stderr
    assert len(images(outputs)) == 2 and len(read_manifest(outputs)) == 2


def test_a_colliding_name_is_refused_without_suggesting_overwrite(run_cli, hermetic):
    fox = ["a red fox in snow", *FAST, "--seed", "7", "--name-template", "{seed}-{slug}.png"]
    assert run_cli(*fox).exit_code == 0
    kept = (hermetic / "outputs" / "7-a-red-fox-in-snow.png").read_bytes()
    refused = run_cli(*fox, "--sampler", "euler")
    assert refused.exit_code == 2
    assert "add {index} to --name-template or use another --outdir" in refused.stderr
    assert "--overwrite" not in refused.stderr
    assert (hermetic / "outputs" / "7-a-red-fox-in-snow.png").read_bytes() == kept
    # an --out file the user named is theirs to replace
    assert run_cli("a fox", *FAST, "--seed", "7", "--out", "fox.png").exit_code == 0
    other = run_cli("a fox", *FAST, "--seed", "7", "--out", "fox.png", "--sampler", "euler")
    assert other.exit_code == 2 and "pass --overwrite to replace it" in other.stderr


def _drop_last_image(folder):
    """As if the run had been killed before its last image: its line and file gone."""
    manifest = folder / "manifest.jsonl"
    lines = manifest.read_text().splitlines()
    (folder / json.loads(lines[-1])["file"]).unlink()
    manifest.write_text("".join(line + "\n" for line in lines[:-1]))
    return json.loads(lines[-1])


def test_without_seed_a_finished_request_makes_new_images_an_unfinished_one_resumes(
    run_cli, hermetic
):
    args = ["a cat", *FAST, "--num-images", "2"]
    outputs = hermetic / "outputs"
    assert run_cli(*args).exit_code == 0
    first = [r["seed"] for r in read_manifest(outputs)]
    again = run_cli(*args)  # finished: new seeds, new numbers
    assert again.exit_code == 0, again.stderr
    assert "already made" not in again.stderr
    records = read_manifest(outputs)
    second = [r["seed"] for r in records[2:]]
    assert len(records) == 4 and second[1] == second[0] + 1 and second != first
    assert [r["number"] for r in records] == [0, 1, 2, 3]
    lost = _drop_last_image(outputs)  # the second run, killed before its last image
    resumed = run_cli(*args)
    assert resumed.exit_code == 0, resumed.stderr
    assert "1 image(s) already made by an earlier run: skipped" in resumed.stderr
    last = read_manifest(outputs)[-1]
    assert (last["seed"], last["number"], last["file"]) == (second[1], 3, lost["file"])
    assert len(images(outputs)) == 4


def test_out_and_templates_take_jpeg_and_webp_names(run_cli, hermetic):
    result = run_cli("a cat", *FAST, "--seed", "1", "--out", "cat.jpg")
    assert result.exit_code == 0, result.stderr
    assert (hermetic / "cat.jpg").is_file()
    template = ["a dog", *FAST, "--seed", "2", "--name-template", "{index:05d}-{seed}.webp"]
    assert run_cli(*template).exit_code == 0
    assert (hermetic / "outputs" / "00000-2.webp").is_file()
    assert "skipped 1" in run_cli(*template).stderr
    refused = run_cli("a cat", *FAST, "--out", "cat.gif")
    assert refused.exit_code == 2 and "must end in .png, .jpg, .jpeg or .webp" in refused.stderr


def _jobs(prompt, seed, count):
    config = GenerationConfig(prompt, width=64, height=64, steps=1, seed=seed, num_images=count)
    return [Job(config, "tiny")]


def _numbers(the_plan):
    return sorted(image.number for image in the_plan.images)


def test_concurrent_shards_agree_on_new_numbers(hermetic):
    folder = hermetic / "out"
    earlier = OutputOptions(outdir=folder)
    list(run(plan(_jobs("a fox", 7, 1), earlier), earlier, RandomPixelsExecutor()))  # number 0
    (folder / "00004-from-another-tool.png").write_bytes(b"not sdgen's")  # A1111 counts it
    shards = [OutputOptions(outdir=folder, shard=(k, 2)) for k in (1, 2)]
    for seed in (3, None):
        jobs = _jobs("a cat", seed, 5)
        one, two = (plan(jobs, output) for output in shards)  # both start at once
        assert (_numbers(one), _numbers(two)) == ([5, 7, 9], [6, 8])
    # shard 1 renames its first image into place and has not written its line yet
    jobs = _jobs("a cat", 3, 5)
    first = plan(jobs, shards[0]).images[0]
    save_png(first.path, np.zeros((64, 64, 3), np.uint8), _infotext(first))
    assert _numbers(plan(jobs, shards[1])) == [6, 8]
    # shard 1 has finished: shard 2 joins its run, seeds included when none was given
    list(run(plan(_jobs("a dog", None, 5), shards[0]), shards[0], RandomPixelsExecutor()))
    late = plan(_jobs("a dog", None, 5), shards[1])
    recorded = {r["index"]: r for r in read_manifest(folder) if r["prompt"] == "a dog"}
    assert _numbers(late) == [r["number"] + 1 for r in (recorded[0], recorded[2])]
    assert {image.job.config.seed for image in late.images} == {recorded[0]["seed"]}


def _infotext(image):
    from sdgen.batch import identity

    return identity.infotext(image.parameters())
