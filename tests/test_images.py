"""sdgen.images: reading init images and masks, resizing, mask blur and latent masks,
"only masked" regions, paste-back and the outpainting canvas, on small synthetic
images made here (diffusers' own versions are compared in
tests/reference/test_images_vs_diffusers.py)."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from sdgen.errors import UsageError
from sdgen.images import (
    ImageInput,
    ImageInputError,
    blur_mask,
    crop,
    is_empty,
    latent_mask,
    mask_array,
    masked_region,
    outpaint_canvas,
    overlay_mask,
    paste_back,
    paste_region,
    placement,
    resize_image,
    resize_mask,
    resize_note,
    size_for_image,
)

RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)


def halves(width=16, height=8, left=RED, right=BLUE) -> np.ndarray:
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2] = left
    pixels[:, width // 2 :] = right
    return pixels


def refused(source, match: str, what="init image") -> str:
    with pytest.raises(ImageInputError, match=match) as caught:
        ImageInput.of(source, what)
    message = str(caught.value)
    assert "\n" not in message and what in message
    assert isinstance(caught.value, UsageError)
    return message


# --- reading ---------------------------------------------------------------------------


def test_importing_sdgen_images_does_not_import_tensorflow():
    code = (
        "import sys, sdgen.images; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize("extension", ["jpg", "png"])
def test_exif_orientation_is_applied(tmp_path, extension):
    path = tmp_path / f"portrait.{extension}"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    Image.fromarray(halves()).save(path, exif=exif)
    assert Image.open(path).size == (16, 8)  # stored landscape

    image = ImageInput.of(path)
    assert (image.width, image.height) == (8, 16)
    # turned clockwise: the stored left half (red) is now on top
    assert np.abs(image.pixels[:6].astype(int) - RED).max() < 12
    assert np.abs(image.pixels[-6:].astype(int) - BLUE).max() < 12
    assert image.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert image.path == path and image.alpha is None


def test_rgba_is_flattened_on_white_and_keeps_its_alpha(tmp_path):
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., :3] = (200, 100, 0)
    rgba[..., 3] = [[0, 128, 255], [255, 255, 0]]
    a = rgba[0, :, 3:].astype(float) / 255
    expected_row = np.floor(rgba[0, :, :3] * a + 255 * (1 - a) + 0.5)
    assert expected_row[0].tolist() == [255, 255, 255] and expected_row[2].tolist() == [200, 100, 0]
    for source in (rgba, Image.fromarray(rgba, "RGBA")):
        image = ImageInput.of(source)
        assert image.pixels.dtype == np.uint8 and image.pixels.shape == (2, 3, 3)
        np.testing.assert_array_equal(image.pixels[0], expected_row)
        np.testing.assert_array_equal(image.alpha, rgba[..., 3])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    from_file = ImageInput.of(tmp_path / "a.png")
    np.testing.assert_array_equal(from_file.pixels[0], expected_row)
    # an opaque RGBA image is plain RGB: no alpha kept
    rgba[..., 3] = 255
    assert ImageInput.of(rgba).alpha is None


def test_greyscale_la_and_palette_with_transparency(tmp_path):
    grey = np.array([[0, 90, 255]], np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "l.png")
    image = ImageInput.of(tmp_path / "l.png")
    np.testing.assert_array_equal(image.pixels, np.repeat(grey[..., None], 3, axis=2))

    la = Image.new("LA", (2, 1))
    la.putpixel((0, 0), (0, 0))  # transparent black
    la.putpixel((1, 0), (0, 255))  # opaque black
    la.save(tmp_path / "la.png")
    image = ImageInput.of(tmp_path / "la.png")
    np.testing.assert_array_equal(image.pixels[0], [[255, 255, 255], [0, 0, 0]])
    np.testing.assert_array_equal(mask_array(image), [[0.0, 1.0]])

    palette = Image.new("P", (3, 1))
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * 759)
    for x, index in enumerate((0, 1, 2)):
        palette.putpixel((x, 0), index)
    palette.info["transparency"] = 0
    palette.save(tmp_path / "p.png")
    image = ImageInput.of(tmp_path / "p.png")
    np.testing.assert_array_equal(image.pixels[0], [[255, 255, 255], RED, BLUE])
    np.testing.assert_array_equal(image.alpha, [[0, 255, 255]])


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257 * 100, 32768, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    expected = [0, 100, 128, 255]  # round(v / 257); Pillow's convert would give 0, 255, 255, 255
    image = ImageInput.of(tmp_path / "deep.png")
    np.testing.assert_array_equal(image.pixels[0, :, 0], expected)
    np.testing.assert_array_equal(image.pixels[..., 0], image.pixels[..., 2])
    # a 32-bit "I" image (how Pillow hands out some 16-bit files) the same
    as_int = ImageInput.of(Image.fromarray(values.astype(np.int32)))
    np.testing.assert_array_equal(as_int.pixels[0, :, 0], expected)


def test_decompression_bombs_are_refused(tmp_path, monkeypatch):
    Image.new("RGB", (12, 12)).save(tmp_path / "warns.png")  # 144 px: Pillow warns
    Image.new("RGB", (30, 30)).save(tmp_path / "raises.png")  # 900 px: Pillow raises
    Image.new("RGB", (9, 9)).save(tmp_path / "fine.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    for name in ("warns", "raises"):
        message = refused(tmp_path / f"{name}.png", "decompression bomb", what="mask")
        assert "100 pixels" in message
    refused(np.zeros((11, 11, 3), np.uint8), "decompression bomb")
    refused(Image.new("RGB", (11, 11)), "decompression bomb")
    assert ImageInput.of(tmp_path / "fine.png").width == 9


def test_missing_folder_text_and_truncated_files_are_refused(tmp_path):
    refused(tmp_path / "nothing.png", "does not exist")
    refused(tmp_path, "is a folder")
    (tmp_path / "notes.png").write_text("not a picture")
    refused(tmp_path / "notes.png", "is not an image")
    Image.fromarray(halves(64, 64)).save(tmp_path / "whole.png")
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    refused(tmp_path / "cut.png", "cannot read")
    refused(42, "must be a path, a PIL image or a NumPy array")


def test_float_arrays_in_unit_range_are_accepted_others_refused():
    floats = np.array([[[0.0, 0.5, 1.0]]], np.float32)
    image = ImageInput.of(floats)
    np.testing.assert_array_equal(image.pixels, [[[0, 128, 255]]])
    assert image.label == "<array>"
    assert ImageInput.of(floats.astype(np.float64)).sha256 == image.sha256
    grey = ImageInput.of(np.full((2, 2), 0.25))
    np.testing.assert_array_equal(grey.pixels, np.full((2, 2, 3), 64))
    refused(floats * 2, r"values in \[0, 1\]")
    refused(np.array([[[np.nan, 0, 0]]]), "NaN")
    for dtype in (np.uint16, np.int64, bool):
        refused(np.zeros((2, 2, 3), dtype), "must be uint8")
    refused(np.zeros((2, 2, 2), np.uint8), "shape")
    refused(np.zeros((0, 2, 3), np.uint8), "shape")


def test_sha256_names_the_pixels():
    a = ImageInput.of(halves())
    assert ImageInput.of(Image.fromarray(halves())).sha256 == a.sha256
    assert a.sha256 == hashlib.sha256(halves().tobytes()).hexdigest()
    assert ImageInput.of(halves(left=GREEN)).sha256 != a.sha256
    assert ImageInput.of(a) is a


def test_mask_array_reads_luminance_or_alpha():
    pixels = np.array([[[255, 255, 255], [0, 0, 0], [255, 0, 0], [128, 128, 128]]], np.uint8)
    mask = mask_array(ImageInput.of(pixels, "mask"))
    assert mask.dtype == np.float32 and mask.shape == (1, 4)
    np.testing.assert_allclose(mask[0], [1.0, 0.0, 76 / 255, 128 / 255], atol=1e-6)
    # strokes painted on a transparent layer: the alpha says what is repainted,
    # whatever colour the strokes are (A1111's create_binary_mask)
    rgba = np.zeros((1, 4, 4), np.uint8)
    rgba[..., 3] = [0, 100, 200, 255]
    np.testing.assert_array_equal(mask_array(ImageInput.of(rgba, "mask")), [[0, 0, 1, 1]])


# --- resizing --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((640, 480), (640, 512)),
        ((500, 300), (512, 320)),
        ((10, 1), (64, 64)),
        ((96, 95), (128, 64)),
    ],
)
def test_size_for_image(size, expected):
    assert size_for_image(*size) == expected


def test_same_size_is_untouched():
    pixels = np.random.default_rng(0).integers(0, 256, (8, 16, 3), dtype=np.uint8)
    for mode in ("crop", "fit", "stretch"):
        out = resize_image(pixels, 16, 8, mode)
        assert out is not pixels
        np.testing.assert_array_equal(out, pixels)
        assert resize_note(16, 8, 16, 8, mode) is None


def test_crop_keeps_the_centre():
    pixels = np.zeros((100, 200, 3), np.uint8)
    pixels[:, :50], pixels[:, 50:150], pixels[:, 150:] = RED, BLUE, GREEN
    out = resize_image(pixels, 100, 100, "crop")
    assert out.shape == (100, 100, 3)
    assert np.abs(out[:, 3:-3].astype(int) - BLUE).max() <= 2  # the sides were cut
    note = resize_note(200, 100, 100, 100, "crop")
    assert "cropped to 100x100" in note and "50 px on the left and 50 on the right" in note


def test_fit_fills_the_bands_from_the_edges():
    pixels = np.zeros((100, 200, 3), np.uint8)
    pixels[:50], pixels[50:] = RED, BLUE
    out = resize_image(pixels, 100, 100, "fit")
    assert placement(200, 100, 100, 100, "fit") == (100, 50, 0, 25)
    np.testing.assert_array_equal(out[:25], np.broadcast_to(out[25], (25, 100, 3)))
    np.testing.assert_array_equal(out[75:], np.broadcast_to(out[74], (25, 100, 3)))
    assert np.abs(out[:20].astype(int) - RED).max() <= 2
    assert np.abs(out[-20:].astype(int) - BLUE).max() <= 2
    assert "25 px at the top and 25 at the bottom" in resize_note(200, 100, 100, 100, "fit")


def test_odd_sizes_and_odd_bands_fill_every_row():
    pixels = np.full((5, 7, 3), 200, np.uint8)
    for mode in ("crop", "fit", "stretch"):
        for width, height in ((9, 9), (3, 11), (13, 4)):
            out = resize_image(pixels, width, height, mode)
            assert out.shape == (height, width, 3)
            assert (out > 190).all(), (mode, width, height)  # no black row left over


def test_extreme_aspect_ratios():
    line = np.full((1, 1000, 3), 9, np.uint8)
    assert placement(1000, 1, 64, 64, "fit") == (64, 1, 0, 32)
    assert resize_image(line, 64, 64, "fit").shape == (64, 64, 3)
    assert resize_image(line, 64, 64, "crop").shape == (64, 64, 3)


def test_stretch_note_and_bad_mode():
    note = resize_note(640, 480, 512, 512, "stretch")
    assert note.startswith("init image 640x480 stretched to 512x512")
    assert (
        resize_note(1024, 512, 512, 256, "crop", what="mask") == "mask 1024x512 scaled to 512x256"
    )
    with pytest.raises(ValueError, match="resize mode"):
        resize_image(np.zeros((2, 2, 3), np.uint8), 4, 4, "zoom")


@pytest.mark.parametrize("mode", ["crop", "fit", "stretch"])
def test_resize_mask_follows_the_image(mode):
    pixels = np.zeros((30, 50, 3), np.uint8)
    pixels[10:20, 5:15] = 255
    mask = (pixels[..., 0] > 0).astype(np.float32)
    image_out = resize_image(pixels, 40, 40, mode)
    mask_out = resize_mask(mask, 40, 40, mode)
    assert mask_out.shape == (40, 40) and mask_out.dtype == np.float32
    assert mask_out.min() >= 0.0 and mask_out.max() <= 1.0
    # the same pixels: uint8 resampling clips Lanczos's ringing between its two passes,
    # floats only at the end, so a corner or two differs a little
    np.testing.assert_array_equal(mask_out > 0.5, image_out[..., 0] > 127)
    np.testing.assert_allclose(mask_out, image_out[..., 0] / 255.0, atol=0.1)


# --- masks -----------------------------------------------------------------------------


def gaussian_taps(sigma: float) -> np.ndarray:
    half = int(2.5 * sigma + 0.5)
    taps = np.exp(-(np.arange(-half, half + 1) ** 2) / (2 * sigma**2))
    return taps / taps.sum()


def test_blur_is_a_truncated_gaussian_across_then_down():
    impulse = np.zeros((41, 41), np.float32)
    impulse[20, 20] = 1.0
    taps = gaussian_taps(4)
    assert taps.size == 21
    across = blur_mask(impulse, 4, radius_y=0)
    np.testing.assert_allclose(across[20, 10:31], taps, atol=1e-6)
    assert across[20, :10].max() == 0 and across[:20].max() == 0  # truncated, not spread down
    both = blur_mask(impulse, 4, radius_y=2)
    np.testing.assert_allclose(both[15:26, 10:31], np.outer(gaussian_taps(2), taps), atol=1e-6)
    np.testing.assert_array_equal(blur_mask(impulse, 0), impulse)


def test_blur_borders_reflect_and_keep_the_range():
    ones = np.ones((5, 6), np.float32)
    np.testing.assert_allclose(blur_mask(ones, 8), ones, atol=1e-6)  # kernel wider than the mask
    step = np.zeros((3, 40), np.float32)
    step[:, 20:] = 1.0
    out = blur_mask(step, 3)
    np.testing.assert_allclose(out[0] + out[0, ::-1], 1.0, atol=1e-6)
    assert out.min() >= 0.0 and out.max() <= 1.0
    with pytest.raises(ValueError):
        blur_mask(step, -1)


def test_latent_mask_binary_is_nearest_after_rounding():
    mask = np.zeros((64, 64), np.float32)
    mask[8:16, 8:24] = 1.0
    mask[40, 41] = 1.0  # not a cell's top-left pixel: lost, as in diffusers
    mask[48, 48] = 0.5  # rounds up (diffusers' binarize: >= 0.5)
    mask[56, 56] = 0.49
    small = latent_mask(mask, 8, 8, binary=True)
    assert small.shape == (8, 8, 1) and small.dtype == np.float32
    expected = np.zeros((8, 8), np.float32)
    expected[1, 1:3] = 1.0
    expected[6, 6] = 1.0
    np.testing.assert_array_equal(small[..., 0], expected)


def test_latent_mask_soft_is_the_mean_of_each_cell():
    mask = np.zeros((16, 16), np.float32)
    mask[0, 0] = 1.0
    mask[8:, 8:] = 0.25
    small = latent_mask(mask, 2, 2, binary=False)[..., 0]
    np.testing.assert_allclose(small, [[1 / 64, 0], [0, 0.25]], atol=1e-7)
    # odd sizes: torch's adaptive windows [floor(i*n/out), ceil((i+1)*n/out))
    ramp = np.tile(np.arange(10, dtype=np.float32), (10, 1)) / 9
    np.testing.assert_allclose(
        latent_mask(ramp, 3, 3, binary=False)[0, :, 0], [1.5 / 9, 4.5 / 9, 7.5 / 9], atol=1e-6
    )


def square_mask(width=100, height=100, box=(20, 40, 30, 50)) -> np.ndarray:
    mask = np.zeros((height, width), np.float32)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = 1.0
    return mask


def test_masked_region_pads_the_box():
    assert masked_region(square_mask(), 0, 64, 64) == (20, 40, 30, 50)
    assert masked_region(square_mask(), 5, 512, 512) == (15, 35, 35, 55)


def test_masked_region_grows_to_the_aspect_ratio():
    wide = square_mask(box=(30, 45, 70, 55))  # 40 x 10
    assert masked_region(wide, 0, 64, 64) == (30, 30, 70, 70)
    assert masked_region(wide, 0, 128, 64) == (30, 40, 70, 60)
    tall = square_mask(box=(45, 30, 55, 70))  # 10 x 40
    assert masked_region(tall, 0, 64, 64) == (30, 30, 70, 70)


def test_masked_region_at_the_border_slides_inside():
    top_left = square_mask(box=(0, 0, 40, 10))
    assert masked_region(top_left, 0, 64, 64) == (0, 0, 40, 40)
    bottom_right = square_mask(box=(90, 60, 100, 100))
    assert masked_region(bottom_right, 0, 64, 64) == (60, 60, 100, 100)


def test_masked_region_clamps_padding_and_aspect_growth():
    assert masked_region(square_mask(), 500, 64, 64) == (0, 0, 100, 100)
    small = square_mask(100, 20, box=(45, 5, 55, 15))
    assert masked_region(small, 0, 128, 64) == (40, 5, 60, 15)
    # wants 40 px of height in a 20 px image: stops at the edges
    assert masked_region(small, 0, 32, 128) == (45, 0, 55, 20)


def test_masked_region_of_a_blurred_and_an_empty_mask():
    blurred = blur_mask(square_mask(), 4)  # 10 px of kernel on each side
    assert masked_region(blurred, 0, 64, 64) == (10, 30, 40, 60)
    # a value an 8-bit mask would store as 0 does not count; one it keeps does
    blurred[95, 95] = 1e-4
    assert masked_region(blurred, 0, 64, 64) == (10, 30, 40, 60)
    blurred[95, 95] = 1 / 255
    assert masked_region(blurred, 0, 64, 64) == (10, 14, 96, 100)  # 86 x 66, grown and slid up
    assert masked_region(np.zeros((7, 9)), 8, 64, 64) == (0, 0, 9, 7)


def test_crop_and_is_empty():
    pixels = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    out = crop(pixels, (2, 1, 5, 4))
    np.testing.assert_array_equal(out, pixels[1:4, 2:5])
    assert not np.shares_memory(out, pixels)
    np.testing.assert_array_equal(crop(square_mask(), (20, 40, 30, 50)), np.ones((10, 10)))
    with pytest.raises(ValueError):
        crop(pixels, (0, 0, 8, 5))
    assert is_empty(np.zeros((4, 4)))
    assert is_empty(np.full((4, 4), 0.001))  # black in 8 bits
    assert not is_empty(np.pad(np.full((1, 1), 1 / 255), 3))


# --- compositing -----------------------------------------------------------------------


def test_paste_back_blends_by_the_mask():
    original = np.full((2, 3, 3), 100, np.uint8)
    generated = np.full((2, 3, 3), 201, np.uint8)
    mask = np.array([[0.0, 1.0, 0.5], [0.25, 0.0, 1.0]], np.float32)
    out = paste_back(original, generated, mask)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 0], [[100, 201, 151], [125, 100, 201]])
    with pytest.raises(ValueError, match="one size"):
        paste_back(original, generated, mask[:, :2])


def test_paste_region_puts_the_result_back_in_place():
    original = np.full((100, 100, 3), 50, np.uint8)
    region = (10, 20, 50, 60)  # 40 x 40
    generated = np.zeros((64, 64, 3), np.uint8)
    generated[...] = RED
    mask = square_mask(box=(15, 25, 45, 55))
    out = paste_region(original, generated, region, mask)
    np.testing.assert_array_equal(out[25:55, 15:45], np.broadcast_to(RED, (30, 30, 3)))
    keep = mask == 0
    np.testing.assert_array_equal(out[keep], original[keep])


def test_overlay_mask():
    blurred = np.array([[0.0, 0.25, 0.5, 0.9]], np.float32)
    np.testing.assert_allclose(overlay_mask(blurred, "full"), [[0, 0.5, 1, 1]])
    np.testing.assert_allclose(overlay_mask(blurred, "masked"), blurred)
    with pytest.raises(ValueError):
        overlay_mask(blurred, "everything")


# --- outpainting -----------------------------------------------------------------------


def test_outpaint_canvas_pads_from_the_edges():
    pixels = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    canvas, mask = outpaint_canvas(pixels, 3, 0, 2, 4)
    assert canvas.shape == (9, 12, 3) and mask.shape == (9, 12) and mask.dtype == np.float32
    np.testing.assert_array_equal(canvas[0:5, 3:10], pixels)
    np.testing.assert_array_equal(canvas[0:5, 0], pixels[:, 0])
    np.testing.assert_array_equal(canvas[0:5, 11], pixels[:, -1])
    np.testing.assert_array_equal(canvas[8, 3:10], pixels[-1])
    np.testing.assert_array_equal(canvas[8, 0], pixels[-1, 0])  # corners from the corner
    assert mask[0:5, 3:10].max() == 0 and mask.sum() == 9 * 12 - 5 * 7
    with pytest.raises(ValueError):
        outpaint_canvas(pixels, -1, 0, 0, 0)
