"""PNG infotext, manifest, slugs, grids and atomic writes."""

from __future__ import annotations

import errno

import numpy as np
import pytest

from sdgen.batch.identity import infotext
from sdgen.errors import OutputExistsError
from sdgen.output.files import slugify, write_atomically
from sdgen.output.grid import grid_image
from sdgen.output.manifest import append_manifest, read_manifest
from sdgen.output.png import parse_infotext, read_infotext, save_png

PARAMETERS = {
    "prompt": "photograph of an astronaut riding a horse",
    "negative_prompt": "blurry, low quality",
    "steps": 50,
    "sampler_label": "DDIM",
    "guidance_scale": 7.5,
    "seed": 123,
    "width": 512,
    "height": 768,
    "model": "sd-v1.4",
    "version": "0.1.0",
}


def test_infotext_is_automatic1111_format():
    assert infotext(PARAMETERS) == (
        "photograph of an astronaut riding a horse\n"
        "Negative prompt: blurry, low quality\n"
        "Steps: 50, Sampler: DDIM, CFG scale: 7.5, Seed: 123, Size: 512x768, "
        "Model: sd-v1.4, Version: sdgen 0.1.0"
    )
    without_negative = infotext({**PARAMETERS, "negative_prompt": "", "guidance_scale": 7})
    assert without_negative.splitlines()[1].startswith("Steps: 50, Sampler: DDIM, CFG scale: 7,")


def test_infotext_round_trip_through_png(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    path = tmp_path / "a.png"
    save_png(path, pixels, infotext(PARAMETERS))
    parsed = parse_infotext(read_infotext(path))
    assert parsed["prompt"] == PARAMETERS["prompt"]
    assert parsed["negative_prompt"] == PARAMETERS["negative_prompt"]
    assert parsed["Steps"] == "50" and parsed["Sampler"] == "DDIM"
    assert parsed["CFG scale"] == "7.5" and parsed["Seed"] == "123"
    assert parsed["Size"] == "512x768" and parsed["Model"] == "sd-v1.4"
    assert parsed["Version"] == "sdgen 0.1.0"
    from PIL import Image

    with Image.open(path) as image:
        assert np.array_equal(np.asarray(image), pixels)


def test_save_png_refuses_to_overwrite_and_leaves_no_temporary_files(hermetic):
    tmp_path = hermetic
    path = tmp_path / "x.png"
    pixels = np.zeros((8, 8, 3), np.uint8)
    save_png(path, pixels, "first")
    with pytest.raises(OutputExistsError):
        save_png(path, pixels, "second")
    assert read_infotext(path) == "first"
    save_png(path, pixels, "third", overwrite=True)
    assert read_infotext(path) == "third"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]


@pytest.mark.parametrize(
    ("prompt", "slug"),
    [
        ("A Castle at Dusk!", "a-castle-at-dusk"),
        ("../../etc/passwd", "etc-passwd"),
        ("/absolute/path\\win", "absolute-path-win"),
        ("café crème", "cafe-creme"),
        ("...", "image"),
        ("猫", "image"),
    ],
)
def test_slugs_are_safe_file_names(prompt, slug):
    assert slugify(prompt) == slug


def test_slug_length_is_bounded():
    assert len(slugify("word " * 100)) <= 48


def test_manifest_lines_append(tmp_path):
    append_manifest(tmp_path, {"file": "a.png", "prompt": "naïve"})
    append_manifest(tmp_path, {"file": "b.png"})
    assert read_manifest(tmp_path) == [{"file": "a.png", "prompt": "naïve"}, {"file": "b.png"}]
    assert (tmp_path / "manifest.jsonl").read_text("utf-8").count("\n") == 2


def test_grid_layout():
    images = [np.full((4, 6, 3), value, np.uint8) for value in (10, 20, 30, 40, 50)]
    grid = grid_image(images)
    assert grid.shape == (8, 18, 3)  # 3 columns of 6 px, 2 rows of 4 px
    assert grid[0, 0, 0] == 10 and grid[0, 6, 0] == 20 and grid[4, 0, 0] == 40
    assert grid[4, 12:].sum() == 0


@pytest.mark.parametrize("code", [errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS])
def test_folders_without_hard_links_still_get_whole_files(tmp_path, monkeypatch, code):
    """gcsfuse, s3fs and SMB refuse link(); the file is renamed into place instead."""
    import os

    def no_links(source, target):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "link", no_links)
    (tmp_path / "out").mkdir()
    path = tmp_path / "out" / "image.png"
    write_atomically(path, b"one")
    assert path.read_bytes() == b"one"
    with pytest.raises(OutputExistsError):
        write_atomically(path, b"two")
    assert path.read_bytes() == b"one"
    write_atomically(path, b"three", overwrite=True)
    assert path.read_bytes() == b"three"
    assert sorted(p.name for p in path.parent.iterdir()) == ["image.png"]  # no temporary left


def test_a_file_that_appears_meanwhile_is_never_replaced_without_hard_links(tmp_path, monkeypatch):
    import os

    (tmp_path / "out").mkdir()
    path = tmp_path / "out" / "image.png"

    def another_writer_first(source, target):  # it wins the race, then link() is refused
        path.write_bytes(b"theirs")
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(os, "link", another_writer_first)
    with pytest.raises(OutputExistsError):
        write_atomically(path, b"ours")
    assert path.read_bytes() == b"theirs"
    assert sorted(p.name for p in path.parent.iterdir()) == ["image.png"]


def test_each_shard_appends_to_its_own_manifest_and_reading_merges_them_by_time(tmp_path):
    append_manifest(tmp_path, {"file": "b.png", "created": "2024-01-01T00:00:02+00:00"}, (2, 2))
    append_manifest(tmp_path, {"file": "a.png", "created": "2024-01-01T00:00:01+00:00"}, (1, 2))
    append_manifest(tmp_path, {"file": "c.png", "created": "2024-01-01T00:00:03+00:00"})
    append_manifest(tmp_path, {"file": "d.png", "created": "2024-01-01T00:00:03+00:00"}, (1, 2))
    names = sorted(p.name for p in tmp_path.glob("manifest*"))
    assert names == ["manifest.jsonl", "manifest.shard-1-of-2.jsonl", "manifest.shard-2-of-2.jsonl"]
    # by time; records of the same second keep manifest.jsonl first, then the shards'
    assert [r["file"] for r in read_manifest(tmp_path)] == ["a.png", "b.png", "c.png", "d.png"]


def test_reading_from_an_offset_leaves_a_line_still_being_written(tmp_path):
    from sdgen.output.manifest import read_records

    path = tmp_path / "manifest.jsonl"
    path.write_bytes(b'{"file": "a.png"}\n{"file": "b.p')
    records, offset = read_records(path)
    assert records == [{"file": "a.png"}] and offset == len(b'{"file": "a.png"}\n')
    with open(path, "ab") as handle:
        handle.write(b'ng"}\n')
    assert read_records(path, offset) == ([{"file": "b.png"}], path.stat().st_size)
    path.write_bytes(b'{"file": "a.png"}\n{"file": "c.png"}')  # a last line without newline
    assert [r["file"] for r in read_manifest(tmp_path)] == ["a.png", "c.png"]


def test_temporaries_of_a_killed_writer_are_removed_by_name(tmp_path):
    from sdgen.output.files import remove_temporaries

    for name in (".a.png.x1y2.tmp", ".b.png.k9.tmp", ".index.html.zz.tmp", "a.png", ".hidden"):
        (tmp_path / name).write_bytes(b"")
    assert remove_temporaries(tmp_path, {"a.png", "index.html"}) == 2
    left = sorted(p.name for p in tmp_path.iterdir() if p.is_file())
    assert left == [".b.png.k9.tmp", ".hidden", "a.png"]
