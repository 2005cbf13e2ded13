"""sdgen.images against diffusers' ``VaeImageProcessor`` and torch's ``interpolate``:
the three resize modes, the "only masked" crop region, the mask on the latent grid the
inpainting pipeline makes (``mask_processor`` then ``prepare_mask_latents``), and the
paste-back overlay, on random images made here."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sdgen.images import (
    ImageInput,
    latent_mask,
    mask_array,
    masked_region,
    paste_back,
    paste_region,
    placement,
    resize_image,
)

from .conftest import require

torch = require("torch")
require("diffusers")
from diffusers.image_processor import VaeImageProcessor  # noqa: E402

SIZES = [
    ((200, 100), (64, 64)),
    ((37, 53), (64, 48)),
    ((64, 64), (40, 72)),
    ((101, 67), (64, 64)),
    ((20, 50), (63, 64)),
    ((64, 16), (64, 63)),  # odd spare height: diffusers leaves its last row black
    ((16, 64), (63, 64)),
]


@pytest.fixture(scope="module")
def processor():
    return VaeImageProcessor(vae_scale_factor=8, resample="lanczos")


@pytest.fixture(scope="module")
def mask_processor():
    # the inpainting pipeline's own settings
    return VaeImageProcessor(
        vae_scale_factor=8, do_normalize=False, do_binarize=True, do_convert_grayscale=True
    )


@pytest.mark.parametrize(("source", "target"), SIZES)
@pytest.mark.parametrize(
    ("mode", "theirs"), [("crop", "crop"), ("fit", "fill"), ("stretch", "default")]
)
def test_resize_modes_match_diffusers(processor, source, target, mode, theirs):
    (src_w, src_h), (width, height) = source, target
    pixels = np.random.default_rng(src_w * src_h).integers(0, 256, (src_h, src_w, 3), np.uint8)
    expected = np.asarray(processor.resize(Image.fromarray(pixels), height, width, theirs))
    ours = resize_image(pixels, width, height, mode)
    assert ours.shape == expected.shape
    scaled_w, scaled_h, x, y = placement(src_w, src_h, width, height, mode)
    same = ours == expected
    if mode == "fit" and height - scaled_h > 2 * y:  # diffusers' (and A1111's) unfilled row
        assert (expected[-1] == 0).all() and (ours[-1] != 0).any()
        same = same[:-1]
    if mode == "fit" and width - scaled_w > 2 * x:
        assert (expected[:, -1] == 0).all() and (ours[:, -1] != 0).any()
        same = same[:, :-1]
    assert same.all()


def random_box_mask(rng, width, height) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    x0, y0 = rng.integers(0, width - 1), rng.integers(0, height - 1)
    x1, y1 = rng.integers(x0 + 1, width + 1), rng.integers(y0 + 1, height + 1)
    mask[y0:y1, x0:x1] = 255
    mask[rng.integers(0, height), rng.integers(0, width)] = 1  # a stray faint pixel
    return mask


def test_masked_region_matches_diffusers_get_crop_region():
    rng = np.random.default_rng(5)
    tries, differ = 600, 0
    for _ in range(tries):
        width, height = (int(v) for v in rng.integers(8, 300, 2))
        mask = random_box_mask(rng, width, height)
        target = tuple(int(v) for v in rng.integers(1, 17, 2) * 64)
        pad = int(rng.choice([0, 4, 32, 200]))
        expected = VaeImageProcessor.get_crop_region(Image.fromarray(mask), *target, pad=pad)
        ours = masked_region(mask / 255.0, pad, *target)
        if ours != tuple(expected):
            # diffusers (and A1111) divide by the float ratio, sdgen in integers: where
            # the float quotient falls a hair under a whole number, diffusers' grown side
            # comes out one pixel shorter than sdgen's
            differ += 1
            assert max(abs(a - b) for a, b in zip(ours, expected, strict=True)) == 1
    assert differ <= tries // 100


@pytest.mark.parametrize(("width", "height"), [(64, 64), (96, 64), (72, 40)])
def test_latent_mask_matches_the_inpainting_pipeline(mask_processor, width, height):
    rng = np.random.default_rng(width + height)
    soft = (rng.random((height, width)) * 255).astype(np.uint8)
    soft[: height // 2] = 0  # a kept half, a soft repainted half
    image = Image.fromarray(soft, "L")
    condition = mask_processor.preprocess(image, height=height, width=width)
    expected = torch.nn.functional.interpolate(condition, size=(height // 8, width // 8))
    ours = latent_mask(mask_array(ImageInput.of(image, "mask")), height // 8, width // 8, True)
    np.testing.assert_array_equal(ours[..., 0], expected[0, 0].numpy())
    assert 0 < ours.sum() < ours.size


@pytest.mark.parametrize(
    ("size", "out"), [((64, 64), (8, 8)), ((50, 37), (7, 5)), ((10, 10), (3, 3))]
)
def test_soft_latent_mask_is_torch_area_interpolation(size, out):
    mask = np.random.default_rng(7).random(size).astype(np.float32)
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(mask)[None, None], size=out, mode="area"
    )
    ours = latent_mask(mask, *out, binary=False)[..., 0]
    np.testing.assert_allclose(ours, expected[0, 0].numpy(), atol=1e-6)


def test_paste_back_and_paste_region_match_apply_overlay(processor):
    rng = np.random.default_rng(11)
    original = rng.integers(0, 256, (80, 120, 3), np.uint8)
    generated = rng.integers(0, 256, (80, 120, 3), np.uint8)
    mask = np.zeros((80, 120), np.uint8)
    mask[20:50, 30:90] = 255
    mask[50:60, 30:90] = 128  # a soft edge
    expected = processor.apply_overlay(
        Image.fromarray(mask), Image.fromarray(original), Image.fromarray(generated)
    )
    ours = paste_back(original, generated, mask / 255.0)
    # Pillow composites premultiplied 8-bit values; the sums agree to one level
    assert np.abs(ours.astype(int) - np.asarray(expected)).max() <= 1

    region = masked_region(mask / 255.0, 8, 64, 64)
    generated_region = rng.integers(0, 256, (64, 64, 3), np.uint8)
    expected = processor.apply_overlay(
        Image.fromarray(mask),
        Image.fromarray(original),
        Image.fromarray(generated_region),
        crop_coords=region,
    )
    ours = paste_region(original, generated_region, region, mask / 255.0)
    assert np.abs(ours.astype(int) - np.asarray(expected)).max() <= 1
