"""The image tasks at the CLI edge (issue 14): flags, the one-line refusals before any
work, the notes, the infotext keys and reading them back (``sdgen info``/``again``), the
manifest fields, the resume identity, prompts files and sweeps.

The tests at the end ("the pipeline's image tasks") need the image-task pipeline
(img2img, inpainting, hires fix in ``Pipeline.generate_iter``): they check what the
pixels show, which only that pipeline makes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST, one_line_error, pixels, png_files
from PIL import Image

from sdgen.again import again_request
from sdgen.batch import identity
from sdgen.batch.image_task import read_images, sized
from sdgen.batch.image_task_record import IMAGE_TASK_IDENTITY
from sdgen.batch.prompts_file import read_prompts_file
from sdgen.batch.work import Job, PlannedImage
from sdgen.catalog import get_model_spec
from sdgen.config import GenerationConfig
from sdgen.errors import ConfigError
from sdgen.images import ImageInput
from sdgen.output.info import parameters_from_text
from sdgen.output.manifest import read_manifest
from sdgen.output.png import read_infotext
from sdgen.pipeline.hires import hires_size, working_scales
from sdgen.recall import recall
from sdgen.service import GenerateRequest, start_generation
from sdgen.sweep import parse_axes

#: tiny at 64 px and 2 steps, without the size: an init image's own size is used
TINY64 = ["--model", "tiny", "--steps", "2"]


def save(path: Path, array) -> Path:
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return path


def noise_image(path: Path, width: int = 64, height: int = 64, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    return save(path, rng.integers(0, 256, (height, width, 3)))


def square_mask(path: Path, width: int = 64, height: int = 64) -> Path:
    mask = np.zeros((height, width), np.uint8)
    mask[height // 4 : height // 2, width // 4 : width // 2] = 255
    return save(path, mask)


def planned(config: GenerationConfig, model: str = "tiny") -> PlannedImage:
    return PlannedImage(0, 0, Job(config.with_defaults(64, 64, 7), model), Path("x.png"))


# --- bad input: one line, exit 2, before any work ---------------------------------


def test_each_bad_image_input_is_one_line_with_exit_2_before_any_work(run_cli, hermetic):
    noise_image(hermetic / "init.png")
    square_mask(hermetic / "mask.png")
    (hermetic / "notes.txt").write_text("not an image")
    save(hermetic / "black.png", np.zeros((64, 64)))
    cases = [
        (["--init-image", "missing.png"], ["init image missing.png does not exist"]),
        (["--init-image", "notes.txt"], ["init image", "notes.txt"]),
        (["--init-image", "init.png", "--mask", "gone.png"], ["mask gone.png does not exist"]),
        (["--init-image", "init.png", "--strength", "0"], ["strength must be a number in (0, 1]"]),
        (["--init-image", "init.png", "--strength", "1.5"], ["strength", "1.5"]),
        (["--mask", "mask.png"], ["--mask needs --init-image"]),
        (["--init-image", "init.png", "--mask", "black.png"], ["black.png", "nothing to repaint"]),
        (["--init-image", "init.png", "--outpaint", "1,2"], ["LEFT,TOP,RIGHT,BOTTOM"]),
        (["--width", "64", "--height", "64", "--hires", "--hires-scale", "1.3"],
         ["hires scale 1.3 makes 83.2x83.2 from 64x64", "1 (64x64) or 2 (128x128)"]),
        (["--hires", "--hires-denoise", "0"], ["hires denoise must be a number in (0, 1]"]),
    ]  # fmt: skip
    for flags, parts in cases:
        result = run_cli("a cat", *TINY64, *flags)
        one_line_error(result, *parts)
        assert "loading" not in result.stderr
    assert not (hermetic / "outputs").exists()  # nothing made, no folder left


def test_a_decompression_bomb_is_refused(run_cli, hermetic, monkeypatch):
    noise_image(hermetic / "big.png", 64, 64)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64x64 is over twice that
    one_line_error(run_cli("a cat", *TINY64, "--init-image", "big.png"), "init image", "big.png")


def test_hires_sizes_the_unet_cannot_take_name_the_nearest_that_work():
    assert hires_size(512, 512, 2) == (1024, 1024)
    assert hires_size(512, 768, 1.5) == (768, 1152)
    with pytest.raises(ConfigError, match=r"1\.375 \(704x704\) or 1\.5 \(768x768\)"):
        hires_size(512, 512, 1.4)
    with pytest.raises(ConfigError, match="larger than 4096"):
        hires_size(2048, 2048, 4)
    assert working_scales(64, 128)[:3] == [1.0, 2.0, 3.0]
    assert 1.25 in working_scales(512, 512) and 1.3 not in working_scales(512, 512)


# --- sizes and notes ------------------------------------------------------------


def test_an_init_image_gives_the_size_and_the_notes_say_what_is_done(hermetic):
    init = noise_image(hermetic / "init.png", 100, 70)
    small = square_mask(hermetic / "mask.png", 50, 35)
    said = []
    request = GenerateRequest(
        prompt="a cat",
        model="tiny",
        settings={"init_image": str(init), "mask": str(small), "steps": 2, "seed": 1},
    )
    generation = start_generation(request, say=said.append)
    [image] = generation.plan.images
    assert (image.job.config.width, image.job.config.height) == (128, 64)
    assert any("making 128x64" in note and "100x70" in note for note in said), said
    assert any("resized to 128x64" in note or "128x64" in note for note in said[1:]), said
    assert any(
        note.startswith(f"mask {small}") and "resized with the image" in note for note in said
    ), said
    assert generation.executor.said >= set(said)  # the pipeline's notes are not said twice
    outpaint = GenerationConfig(prompt="a", init_image=init, outpaint=(0, 0, 28, 58))
    tiny = get_model_spec("tiny")
    assert (sized(outpaint, tiny).width, sized(outpaint, tiny).height) == (128, 128)
    given = sized(GenerationConfig(prompt="a", init_image=init, width=256), tiny)
    assert (given.width, given.height) == (256, 64)


# --- records: manifest, infotext, identity ---------------------------------------


def test_manifest_fields_and_infotext_keys_of_each_task(hermetic):
    init = ImageInput.of(noise_image(hermetic / "init.png"))
    mask = ImageInput.of(square_mask(hermetic / "mask.png"), "mask")
    img2img = GenerationConfig(prompt="a", init_image=init, strength=0.5, resize="fit")
    fields = planned(img2img).parameters()
    assert fields["image_task"] == "img2img"
    assert (fields["init_image"], fields["init_image_sha256"]) == (init.label, init.sha256)
    assert (fields["strength"], fields["resize"]) == (0.5, "fit")
    assert "mask" not in fields and "hires" not in fields
    text = identity.infotext(fields)
    assert "Denoising strength: 0.5, Resize mode: Resize and fill, " in text
    assert f"Init image sha256: {init.sha256[:12]}," in text

    inpaint = GenerationConfig(
        prompt="a", init_image=init, mask=mask, mask_blur=0, inpaint_fill="noise",
        inpaint_area="masked", inpaint_padding=16,
    )  # fmt: skip
    fields = planned(inpaint).parameters()
    assert (fields["mask"], fields["mask_sha256"]) == (mask.label, mask.sha256)
    assert (fields["mask_blur"], fields["inpaint_fill"]) == (0, "noise")
    assert (fields["inpaint_area"], fields["inpaint_padding"]) == ("masked", 16)
    text = identity.infotext(fields)
    assert f"Mask sha256: {mask.sha256[:12]}, Mask blur: 0, Masked content: latent noise, " in text
    assert "Inpaint area: Only masked, Masked area padding: 16," in text

    outpaint = GenerationConfig(prompt="a", init_image=init, outpaint="0,0,64,0")
    fields = planned(outpaint).parameters()
    assert fields["outpaint"] == [0, 0, 64, 0] and fields["image_task"] == "outpaint"
    assert 'Outpaint: "0,0,64,0", Mask blur: 4,' in identity.infotext(fields)

    hires = GenerationConfig(
        prompt="a", hires=True, hires_scale=1.5, hires_upscaler="latent-nearest"
    )
    fields = planned(hires).parameters()
    assert (fields["hires"], fields["hires_scale"], fields["hires_steps"]) == (True, 1.5, None)
    text = identity.infotext(fields)
    assert "Denoising strength: 0.7, Hires upscale: 1.5, Hires upscaler: Latent (nearest)," in text
    assert "Hires steps" not in text  # A1111 writes it only when it is not --steps
    fields = planned(GenerationConfig(prompt="a", hires=True, hires_steps=9)).parameters()
    assert "Hires upscale: 2, Hires steps: 9, Hires upscaler: Latent," in identity.infotext(fields)

    plain = planned(GenerationConfig(prompt="a", strength=0.3, mask_blur=9)).parameters()
    assert not {"strength", "mask_blur", "image_task", "hires"} & set(plain)  # unused: none


def test_the_identity_holds_the_images_content_and_every_setting(hermetic):
    path = noise_image(hermetic / "init.png")
    first = planned(GenerationConfig(prompt="a", init_image=str(path))).parameters()
    noise_image(path, seed=1)  # the same path, new content
    second = planned(GenerationConfig(prompt="a", init_image=str(path))).parameters()
    assert first["init_image"] == second["init_image"]
    assert identity.identity(first) != identity.identity(second)
    moved = noise_image(hermetic / "moved.png", seed=1)  # the same content elsewhere
    third = planned(GenerationConfig(prompt="a", init_image=str(moved))).parameters()
    assert identity.identity(third) == identity.identity(second)
    base = GenerationConfig(
        prompt="a", init_image=str(path), mask=str(square_mask(hermetic / "m.png"))
    )
    for change in (
        {"strength": 0.5}, {"resize": "stretch"}, {"mask_blur": 0},
        {"inpaint_fill": "noise"}, {"inpaint_area": "masked"},
    ):  # fmt: skip
        other = planned(GenerationConfig(**{**_fields(base), **change})).parameters()
        assert identity.identity(other) != identity.identity(planned(base).parameters()), change
    hires = planned(GenerationConfig(prompt="a", hires=True)).parameters()
    for change in ({"hires_scale": 1.5}, {"hires_steps": 3}, {"hires_denoise": 0.5},
                   {"hires_upscaler": "lanczos"}):  # fmt: skip
        other = planned(GenerationConfig(prompt="a", hires=True, **change)).parameters()
        assert identity.identity(other) != identity.identity(hires), change
    # a txt2img record written before image tasks existed is still the same work
    plain = planned(GenerationConfig(prompt="a")).parameters()
    legacy = {k: v for k, v in plain.items() if k not in IMAGE_TASK_IDENTITY}
    assert identity.identity(legacy) == identity.identity(plain)


def _fields(config: GenerationConfig) -> dict:
    return {name: getattr(config, name) for name in config.__dataclass_fields__}


def test_a_changed_init_image_at_the_same_path_is_not_taken_for_done(run_cli, hermetic):
    init = noise_image(hermetic / "init.png")
    args = ["a cat", *TINY64, "--init-image", "init.png", "--seed", "3"]
    assert run_cli(*args).exit_code == 0
    again = run_cli(*args)
    assert again.exit_code == 0 and "1 image(s) already made" in again.stderr
    noise_image(init, seed=5)  # new content, same path
    changed = run_cli(*args)
    assert changed.exit_code == 0, changed.stderr
    assert "already made" not in changed.stderr
    records = read_manifest(hermetic / "outputs")
    assert len(records) == 2 and records[0]["init_image"] == records[1]["init_image"] == "init.png"
    assert records[0]["init_image_sha256"] != records[1]["init_image_sha256"]
    assert len(png_files(hermetic / "outputs")) == 2


# --- reading records back: info, recall, again ------------------------------------


def test_the_infotext_reads_back_into_the_same_settings(hermetic):
    init = ImageInput.of(noise_image(hermetic / "init.png"))
    mask = ImageInput.of(square_mask(hermetic / "mask.png"), "mask")
    config = GenerationConfig(
        prompt="a", init_image=init, mask=mask, strength=0.4, resize="stretch", mask_blur=6,
        inpaint_fill="latent-nothing", inpaint_area="masked", inpaint_padding=8,
    )  # fmt: skip
    recalled = recall(parameters_from_text(identity.infotext(planned(config).parameters())))
    for name in (
        "strength",
        "resize",
        "mask_blur",
        "inpaint_fill",
        "inpaint_area",
        "inpaint_padding",
    ):
        assert recalled.settings[name] == getattr(config, name), name
    assert recalled.images == {"init_image": init.sha256[:12], "mask": mask.sha256[:12]}
    assert recalled.ignored == ()
    hires = GenerationConfig(prompt="a", hires=True, hires_scale=1.5, hires_steps=4,
                             hires_denoise=0.45, hires_upscaler="lanczos")  # fmt: skip
    recalled = recall(parameters_from_text(identity.infotext(planned(hires).parameters())))
    assert {k: recalled.settings[k] for k in ("hires", "hires_scale", "hires_steps",
                                             "hires_denoise", "hires_upscaler")} == {
        "hires": True, "hires_scale": 1.5, "hires_steps": 4, "hires_denoise": 0.45,
        "hires_upscaler": "lanczos",
    }  # fmt: skip
    assert recalled.images == {} and "strength" not in recalled.settings
    outpaint = GenerationConfig(prompt="a", init_image=init, outpaint=(8, 0, 0, 64))
    recalled = recall(parameters_from_text(identity.infotext(planned(outpaint).parameters())))
    assert recalled.settings["outpaint"] == (8, 0, 0, 64)


def test_a1111_image_task_infotexts_are_read(hermetic):
    inpaint = (
        "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, "
        "Denoising strength: 0.6, Mask blur: 8, Masked content: fill, Inpaint area: Only "
        "masked, Masked area padding: 48, Version: v1.10.1"
    )
    recalled = recall(parameters_from_text(inpaint))
    assert recalled.settings["strength"] == 0.6 and recalled.settings["mask_blur"] == 8
    assert recalled.settings["inpaint_area"] == "masked"
    assert recalled.settings["inpaint_padding"] == 48
    assert recalled.images == {"init_image": "", "mask": ""}  # A1111 writes no hashes
    assert [note.label for note in recalled.ignored] == ["Masked content (fill)"]
    hires = "a\nSteps: 20, Seed: 1, Size: 512x512, Hires upscaler: R-ESRGAN 4x+, Hires upscale: 2"
    recalled = recall(parameters_from_text(hires))
    assert recalled.settings["hires"] and "hires_upscaler" not in recalled.settings
    assert [note.label for note in recalled.ignored] == ["Hires upscaler (R-ESRGAN 4x+)"]


def test_info_shows_the_image_task_keys(run_cli, hermetic):
    init = noise_image(hermetic / "init.png")
    fields = planned(GenerationConfig(prompt="a", init_image=str(init), strength=0.3)).parameters()
    from sdgen.output.png import save_png

    save_png(hermetic / "made.png", np.zeros((8, 8, 3), np.uint8), identity.infotext(fields))
    shown = run_cli("info", "made.png", "--json")
    assert shown.exit_code == 0, shown.stderr
    settings = json.loads(shown.stdout)["settings"]
    assert settings["Denoising strength"] == 0.3 and settings["Resize mode"] == "Crop and resize"
    assert settings["Init image sha256"] == ImageInput.of(init).sha256[:12]


def test_again_needs_the_init_image_and_mask_and_checks_their_hashes(run_cli, hermetic):
    init = noise_image(hermetic / "init.png")
    mask = square_mask(hermetic / "mask.png")
    config = GenerationConfig(prompt="a cat", init_image=str(init), mask=str(mask), strength=0.5)
    from sdgen.output.png import save_png

    made = hermetic / "made.png"
    save_png(made, np.zeros((8, 8, 3), np.uint8), identity.infotext(planned(config).parameters()))
    one_line_error(run_cli("again", "made.png", *FAST), "made from an init image", "--init-image")
    one_line_error(
        run_cli("again", "made.png", *FAST, "--init-image", "init.png"), "a mask", "--mask PATH"
    )
    again = again_request(made, {"init_image": str(init), "mask": str(mask)})
    settings = again.request.settings
    assert settings["init_image"].sha256 == ImageInput.of(init).sha256
    assert settings["strength"] == 0.5 and again.ignored == ()
    other = noise_image(hermetic / "other.png", seed=9)
    again = again_request(made, {"init_image": str(other), "mask": str(mask)})
    assert (
        again.ignored[0].startswith("Init image sha256 (") and "another image" in again.ignored[0]
    )
    # a txt2img image made again from an image: img2img
    plain = again_request(_txt2img_png(hermetic), {"init_image": str(init)})
    assert plain.request.settings["init_image"].label == str(init)


def _txt2img_png(folder: Path) -> Path:
    from sdgen.output.png import save_png

    fields = planned(GenerationConfig(prompt="a cat")).parameters()
    save_png(folder / "plain.png", np.zeros((8, 8, 3), np.uint8), identity.infotext(fields))
    return folder / "plain.png"


# --- prompts files and sweeps ------------------------------------------------------


def test_prompts_file_image_keys_with_paths_relative_to_the_file(hermetic):
    folder = hermetic / "batch"
    (folder / "images").mkdir(parents=True)
    noise_image(folder / "images" / "a.png")
    square_mask(folder / "images" / "m.png")
    lines = [
        json.dumps({"prompt": "one", "init_image": "images/a.png", "strength": 0.4,
                    "resize": "fit", "outpaint": [0, 0, 64, 0], "mask_blur": 2}),
        json.dumps({"prompt": "two", "init_image": "images/a.png", "mask": "images/m.png",
                    "inpaint_fill": "noise", "inpaint_area": "masked", "inpaint_padding": 4}),
        json.dumps({"prompt": "three", "hires": True, "hires_scale": 1.5, "hires_steps": 3,
                    "hires_upscaler": "lanczos", "hires_denoise": 0.5}),
        '--prompt "four" --init_image images/a.png --denoising_strength 0.3',
        json.dumps({"prompt": "five", "hires": "yes"}),
        json.dumps({"prompt": "six", "strength": "high"}),
    ]  # fmt: skip
    (folder / "prompts.txt").write_text("\n".join(lines) + "\n")
    one, two, three, four, five, six = read_prompts_file(folder / "prompts.txt")
    assert one.error is None and one.overrides["init_image"].label == str(folder / "images/a.png")
    assert (one.overrides["strength"], one.overrides["outpaint"]) == (0.4, [0, 0, 64, 0])
    assert two.overrides["mask"].sha256 == ImageInput.of(folder / "images/m.png").sha256
    assert three.overrides["hires_scale"] == 1.5 and three.error is None
    assert four.overrides["strength"] == 0.3 and four.overrides["init_image"].width == 64
    assert "true or false" in five.error and not five.fatal
    assert "'strength' must be a number" in six.error


def test_a_missing_image_in_line_7_stops_the_run_before_any_image(run_cli, hermetic):
    noise_image(hermetic / "a.png")
    lines = [json.dumps({"prompt": f"p{n}", "init_image": "a.png"}) for n in range(1, 7)]
    lines.append(json.dumps({"prompt": "p7", "init_image": "nowhere/b.png"}))
    (hermetic / "prompts.txt").write_text("\n".join(lines) + "\n")
    result = run_cli("--prompts-file", "prompts.txt", *TINY64)
    one_line_error(result, "prompts.txt", "line 7", "nowhere/b.png", "does not exist")
    assert "loading" not in result.stderr and not (hermetic / "outputs").exists()


def test_sweeps_of_strength_and_hires_denoise(hermetic):
    init = ImageInput.of(noise_image(hermetic / "init.png"))
    [axis] = parse_axes(["strength=0.3,0.5"], {"init_image": init})
    assert (axis.field, axis.values, axis.cell_label(1)) == (
        "strength", (0.3, 0.5), "Denoising strength: 0.5"
    )  # fmt: skip
    [axis] = parse_axes(["hires-denoise=0.4-0.7(4)"], {"hires": True})
    assert axis.values == (0.4, 0.5, 0.6, 0.7)
    with pytest.raises(Exception, match="strength must be a number in"):
        parse_axes(["strength=0.5,1.5"], {"init_image": init})
    # the image is read once, not once per value or cell
    settings = read_images({"init_image": str(hermetic / "init.png")})
    assert settings["init_image"] == init


def test_presets_take_the_scalar_image_task_settings(run_cli, hermetic):
    (hermetic / "soft.toml").write_text('strength = 0.35\nhires-denoise = 0.5\nresize = "fit"\n')
    noise_image(hermetic / "init.png")
    request = {}
    import sdgen.cli.generate as generate

    def capture(req, *args, **kwargs):
        request["settings"] = dict(req.settings)

    original = generate.run_and_report
    generate.run_and_report = capture
    try:
        result = run_cli("a cat", *TINY64, "--config", "soft.toml", "--init-image", "init.png")
    finally:
        generate.run_and_report = original
    assert result.exit_code == 0, result.stderr
    settings = request["settings"]
    assert (settings["strength"], settings["hires_denoise"], settings["resize"]) == (
        0.35,
        0.5,
        "fit",
    )
    (hermetic / "bad.toml").write_text('init-image = "init.png"\n')
    assert run_cli("a cat", *TINY64, "--config", "bad.toml").exit_code == 2


# --- the pipeline's image tasks (these need helper "pipe"'s pipeline) -----------


def test_pipe_img2img_starts_from_the_image(run_cli, hermetic):
    """The tiny model's random VAE does not give its input back, so what is checked is
    that the image counts: another init image, or another strength, makes another
    picture from the same seed, and none is the txt2img picture of that seed."""
    first = noise_image(hermetic / "a.png", seed=2)
    second = noise_image(hermetic / "b.png", seed=3)
    common = ["a cat", *TINY64, "--steps", "10", "--seed", "4"]
    for name, image, strength in (("a", first, "0.3"), ("b", second, "0.3"), ("c", first, "0.8")):
        made = run_cli(
            *common, "--init-image", image, "--strength", strength, "--out", f"{name}-out.png"
        )
        assert made.exit_code == 0, made.stderr
    plain = run_cli(*common, "--width", "64", "--height", "64", "--out", "txt2img.png")
    assert plain.exit_code == 0, plain.stderr
    made = {name: pixels(hermetic / f"{name}-out.png") for name in ("a", "b", "c")}
    made["txt2img"] = pixels(hermetic / "txt2img.png")
    names = list(made)
    for n, one in enumerate(names):
        for other in names[n + 1 :]:
            assert not np.array_equal(made[one], made[other]), (one, other)


def test_pipe_inpainting_keeps_the_unmasked_pixels(run_cli, hermetic):
    init = noise_image(hermetic / "init.png", seed=3)
    mask = square_mask(hermetic / "mask.png")
    made = run_cli("a cat", *TINY64, "--init-image", init, "--mask", mask, "--mask-blur", "0",
                   "--seed", "4", "--out", "inpaint.png")  # fmt: skip
    assert made.exit_code == 0, made.stderr
    out, source = pixels(hermetic / "inpaint.png"), pixels(init)
    keep = np.asarray(Image.open(mask)) == 0
    assert np.array_equal(out[keep], source[keep])
    assert not np.array_equal(out[~keep], source[~keep])


def test_pipe_hires_fix_makes_the_larger_size(run_cli, hermetic):
    made = run_cli("a cat", *FAST, "--hires", "--hires-steps", "2", "--seed", "4",
                   "--out", "hires.png")  # fmt: skip
    assert made.exit_code == 0, made.stderr
    assert pixels(hermetic / "hires.png").shape == (128, 128, 3)
    assert "Size: 64x64" in read_infotext(hermetic / "hires.png")  # the base size, as A1111


def test_the_python_api_takes_a_numpy_array_or_a_pil_image(hermetic):
    array = np.random.default_rng(1).integers(0, 256, (70, 130, 3)).astype(np.uint8)
    for source in (array, Image.fromarray(array)):
        request = GenerateRequest(
            prompt="a cat", model="tiny", settings={"init_image": source, "seed": 2}
        )
        [image] = start_generation(request).plan.images
        config = image.job.config
        assert (config.width, config.height) == (128, 64)
        assert config.init_image.pixels.shape == (70, 130, 3)
        assert image.parameters()["init_image"] in ("<array>", "<PIL image>")
