"""PNG, JPEG and WebP files with their infotext where AUTOMATIC1111 puts it, read back by
sdgen and by sd-parsers (an independent reader of A1111's metadata); grids that carry
their run's parameters; and a contact sheet that links the grid."""

from __future__ import annotations

import dataclasses
import types
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from PIL import Image

from sdgen.batch.identity import infotext
from sdgen.batch.plan import plan
from sdgen.batch.run import Saved, run
from sdgen.batch.work import Job, OutputOptions
from sdgen.config import GenerationConfig
from sdgen.errors import ConfigError, OutputExistsError
from sdgen.output.contact_sheet import ContactSheet
from sdgen.output.formats import IMAGE_SUFFIXES, save_image
from sdgen.output.png import format_number, parse_infotext, read_infotext, save_png

PARAMETERS = {
    "prompt": "a lighthouse on a cliff at dusk, ünïcödé ✓",
    "negative_prompt": "blurry, low quality",
    "steps": 8,
    "sampler_label": "DPM++ 2M",
    "guidance_scale": 7.5,
    "seed": 42,
    "width": 96,
    "height": 64,
    "model": "tiny",
    "version": "0.1.0",
}

FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


def _pixels(seed: int = 0, height: int = 64, width: int = 96) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _sd_parsers(path: Path):
    """What sd-parsers finds in ``path``: its A1111 reader, as a user would call it. It
    is in the ``test`` extra; a missing one fails these tests rather than skip them."""
    import sd_parsers

    found = sd_parsers.ParserManager().parse(path)
    assert found is not None, f"sd-parsers found no parameters in {path.name}"
    return found


def _assert_sd_parsers_reads(path: Path, parameters: dict) -> None:
    found = _sd_parsers(path)
    assert found.generator.name == "AUTOMATIC1111"
    assert [prompt.value for prompt in found.prompts] == [parameters["prompt"]]
    assert [prompt.value for prompt in found.negative_prompts] == [parameters["negative_prompt"]]
    (sampler,) = found.samplers
    assert sampler.name == parameters["sampler_label"]
    assert sampler.parameters["steps"] == str(parameters["steps"])
    assert sampler.parameters["seed"] == str(parameters["seed"])
    assert sampler.parameters["cfg_scale"] == format_number(parameters["guidance_scale"])
    assert found.metadata["Size"] == f"{parameters['width']}x{parameters['height']}"


@pytest.mark.parametrize("suffix", list(FORMATS))
def test_each_format_carries_the_infotext_where_a1111_puts_it(suffix, hermetic):
    path = hermetic / f"image{suffix}"
    text = infotext(PARAMETERS)
    sha256 = save_png(path, _pixels(), text)
    with Image.open(path) as image:
        assert image.format == FORMATS[suffix]
        assert image.size == (96, 64)
        if suffix != ".png":  # EXIF UserComment: "UNICODE\0" and UTF-16 big-endian
            comment = image.getexif().get_ifd(0x8769)[0x9286]
            assert comment == b"UNICODE\0" + text.encode("utf-16-be")
    assert read_infotext(path) == text
    assert parse_infotext(read_infotext(path))["Seed"] == "42"
    import hashlib

    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha256


@pytest.mark.parametrize("suffix", list(FORMATS))
def test_sd_parsers_reads_prompt_negative_steps_sampler_seed_and_size(suffix, hermetic):
    path = hermetic / f"image{suffix}"
    save_image(path, _pixels(), infotext(PARAMETERS))
    _assert_sd_parsers_reads(path, PARAMETERS)


def test_jpeg_and_webp_keep_the_picture_close_to_the_pixels(hermetic):
    # smooth pixels, as a decoded image has: quality 95 stays within a few levels
    ramp = np.linspace(0, 255, 96, dtype=np.float64)
    pixels = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:64, None], 128.0), -1)
    pixels = pixels.astype(np.uint8)
    for suffix in (".jpg", ".webp"):
        path = hermetic / f"smooth{suffix}"
        save_image(path, pixels, "x")
        with Image.open(path) as image:
            back = np.asarray(image.convert("RGB")).astype(int)
        assert np.abs(back - pixels).mean() < 3, suffix


def test_a_jpeg_is_refused_over_an_existing_file_and_an_unknown_suffix_is_refused(hermetic):
    path = hermetic / "x.jpg"
    save_image(path, _pixels(), "first")
    with pytest.raises(OutputExistsError):
        save_image(path, _pixels(), "second")
    assert read_infotext(path) == "first"
    with pytest.raises(ConfigError, match=r"\.gif"):
        save_image(hermetic / "x.gif", _pixels(), "text")
    assert sorted(p.name for p in hermetic.iterdir()) == ["x.jpg"]
    assert set(IMAGE_SUFFIXES) == set(FORMATS)


def test_an_image_without_parameters_reads_as_none(hermetic):
    for suffix in (".png", ".jpg", ".webp"):
        path = hermetic / f"plain{suffix}"
        Image.fromarray(_pixels()).save(path)
        assert read_infotext(path) is None


class _Executor:
    """Images of random pixels, one by one, as a real executor yields them."""

    load_seconds: ClassVar[dict] = {}

    def run(self, work, callback=None):
        for job, ks in work:
            for k in ks:
                pixels = _pixels(k, job.config.height, job.config.width)
                yield job, types.SimpleNamespace(index=k, pixels=pixels, seconds=0.0)


def _run(folder: Path, grid_suffix: str = ".png"):
    config = GenerationConfig(
        "a red fox in snow",
        negative_prompt="blurry",
        width=64,
        height=64,
        steps=3,
        seed=7,
        num_images=3,
    )
    options = OutputOptions(outdir=folder, grid=True)
    the_plan = plan([Job(config, "tiny")], options)
    grid = the_plan.grid_path
    the_plan = dataclasses.replace(the_plan, grid_path=grid.with_suffix(grid_suffix))
    saved = [event for event in run(the_plan, options, _Executor()) if isinstance(event, Saved)]
    assert len(saved) == 3
    return the_plan, saved


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp"])
def test_the_grid_carries_the_first_images_parameters(suffix, hermetic):
    """As A1111's grids do; a grid beside a JPEG is a JPEG (``--out NAME.jpg --grid``)."""
    the_plan, saved = _run(hermetic / "outputs", suffix)
    grid = the_plan.grid_path
    assert grid.name.endswith(f"-grid{suffix}")
    with Image.open(grid) as image:
        assert image.format == FORMATS[suffix] and image.size == (128, 128)  # 2x2 cells
    first = saved[0].image
    assert read_infotext(grid) == read_infotext(first.path) == infotext(first.parameters())
    _assert_sd_parsers_reads(grid, first.parameters())


def test_the_contact_sheet_links_the_grid(hermetic):
    folder = hermetic / "outputs"
    the_plan, saved = _run(folder)
    page = ContactSheet(folder).update().read_text()
    grid = the_plan.grid_path.name
    assert f'<a class="thumb" href="{grid}"><img src="{grid}"' in page
    before, cards = page.split('<main class="grid">')
    assert grid in before and grid not in cards  # linked above the images, not a card
    for event in saved:
        assert f'src="{event.image.path.name}"' in page
    assert "<h1>sdgen — 3 images</h1>" in page


def test_a_contact_sheet_without_a_grid_links_none(hermetic):
    folder = hermetic / "outputs"
    the_plan, _ = _run(folder)
    the_plan.grid_path.unlink()
    page = ContactSheet(folder).update().read_text()
    assert "-grid" not in page and "<h2>" not in page
