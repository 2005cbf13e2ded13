"""Inpainting and outpainting: repaint the masked part of an image, keep the rest.

Both start as img2img does (:mod:`.img2img`), from the init image (for outpainting,
the image on a larger canvas whose new border is filled from its edges and masked,
``sdgen.images.outpaint_canvas``), resized with its mask to the requested size.

- **What the masked latents start from** (``--inpaint-fill``, at the latent level as
  A1111 does): ``original`` keeps the encoded image, ``noise`` puts a standard normal
  draw there, ``latent-nothing`` zeros; the sampler's own noise is added on top.
- **Any (4-channel) model**: after every step the kept latents are put back, noised to
  the next step's level, and after the last step put back clean: diffusers'
  ``StableDiffusionInpaintPipeline`` formula ``(1 - m) * add_noise(x0, noise, t_next) +
  m * latents``. sdgen follows diffusers here because it is the independent
  implementation the proofs compare against, and because it blends the latents the
  sampler carries (A1111 blends its denoised estimate, stable-diffusion.cpp likewise);
  in the kept region all three converge on the init image.
- **9-channel inpainting models**: every U-Net call takes ``[latents, mask, VAE(masked
  image)]`` (diffusers' order), with the mask rounded to {0, 1} (A1111 and diffusers)
  and the masked image the init image with the masked pixels set to 0 (mid-grey in
  [-1, 1]). Nothing is blended in the loop: the network itself keeps the rest. Without
  a mask such a model makes txt2img on A1111's conditioning: an all-ones mask over a
  0.5-grey image.
- **The latent mask** is the blurred mask (``--mask-blur``, A1111's) rounded to {0, 1}
  on the latent grid (``sdgen.images.latent_mask``).
- **Pasted back**: the decoded result is laid under the original with A1111's overlay
  mask (``sdgen.images.overlay_mask``), so the kept pixels are the original's up to
  the blur, whatever the VAE's round trip did.
- **"Only masked"** (``--inpaint-area masked``): the region around the mask
  (``--inpaint-padding``, grown to the output's aspect ratio) is cut out, enlarged to
  the requested size, inpainted there at full resolution and pasted back into place.
"""

from __future__ import annotations

import numpy as np

from ..images import (
    blur_mask,
    crop,
    latent_mask,
    mask_array,
    masked_region,
    outpaint_canvas,
    overlay_mask,
    resize_image,
    resize_mask,
)
from .img2img import StartImage, encode_pixels, img2img_start_index, to_model_range


def canvas_and_mask(config, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """The image to inpaint (uint8, ``height`` x ``width``) and its unblurred mask (float,
    1 = repaint), brought to the output size with the init image's ``--resize``
    geometry; for outpainting the padded canvas and its border mask."""
    pixels = config.init_image.pixels
    if config.outpaint is not None:
        canvas, mask = outpaint_canvas(pixels, *config.outpaint)
    else:
        canvas, mask = pixels, mask_array(config.mask)
    if canvas.shape[:2] != (height, width):
        canvas = resize_image(canvas, width, height, config.resize)
    if mask.shape != (height, width):
        mask = resize_mask(mask, width, height, config.resize)
    return canvas, np.clip(mask, 0.0, 1.0).astype(np.float32)


def inpaint_start(backend, config, width: int, height: int, in_channels: int) -> StartImage:
    """The ``StartImage`` of an inpainting or outpainting request at ``width`` x
    ``height`` for a U-Net of ``in_channels`` (4 or 9)."""
    canvas, mask = canvas_and_mask(config, width, height)
    blurred = blur_mask(mask, config.mask_blur) if config.mask_blur else mask
    pasted_with = overlay_mask(blurred, config.inpaint_area)
    overlay = region_paste = None
    if config.inpaint_area == "masked":
        region = masked_region(blurred, config.inpaint_padding, width, height)
        pixels = resize_image(crop(canvas, region), width, height, "crop")
        work_mask = resize_mask(crop(blurred, region), width, height, "crop")
        region_paste = (canvas, region, pasted_with)
    else:
        pixels, work_mask = canvas, blurred
        overlay = (canvas, pasted_with)
    grid = latent_mask(work_mask, height // 8, width // 8, binary=True)
    keep = extra = None
    if in_channels == 9:
        masked = to_model_range(pixels) * (work_mask < 0.5)[..., None].astype(np.float32)
        extra = np.concatenate([grid, encode_pixels(backend, masked)], axis=-1)
    else:
        keep = 1.0 - grid
    return StartImage(
        latents=encode_pixels(backend, pixels),
        steps=config.steps,
        start_index=img2img_start_index(config.steps, config.strength),
        keep=keep,
        fill=config.inpaint_fill,
        extra=extra,
        overlay=overlay,
        region=region_paste,
    )


def unmasked_conditioning(backend, width: int, height: int) -> np.ndarray:
    """A 9-channel model's extra input (h, w, 5) when nothing is masked (txt2img, hires
    fix): an all-ones mask and the latents of a 0.5-grey image, as A1111 feeds it."""
    grey = np.zeros((height, width, 3), np.float32)  # 0.5 grey is 0 in [-1, 1]
    ones = np.ones((height // 8, width // 8, 1), np.float32)
    return np.concatenate([ones, encode_pixels(backend, grey)], axis=-1)


def filled(x0: np.ndarray, start: StartImage, noise: np.ndarray | None) -> np.ndarray:
    """The init latents (B, h, w, 4) with the masked region filled by ``start.fill``:
    unchanged (``original``), ``noise`` (a standard normal draw, B rows), or zeros."""
    if start.fill == "original" or (start.keep is None and start.extra is None):
        return x0
    repaint = start.extra[..., :1] if start.extra is not None else 1.0 - start.keep
    if start.fill == "noise":
        return x0 * (1.0 - repaint) + noise * repaint
    return x0 * (1.0 - repaint)


__all__ = ["canvas_and_mask", "filled", "inpaint_start", "unmasked_conditioning"]
