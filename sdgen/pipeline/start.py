"""What each pass of a request starts from: nothing (txt2img), an init image (img2img),
an image and its mask (inpainting, outpainting), the first pass's enlarged latents
(hires fix), or, for an inpainting model without a mask, its unmasked conditioning."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..config import GenerationConfig
from .hires import lanczos, upscale_latents
from .img2img import StartImage, encode_pixels, img2img_start, img2img_start_index, img2img_steps
from .inpaint import inpaint_start, unmasked_conditioning
from .stages import decode_image


def task_start(backend, family, config: GenerationConfig, width: int, height: int):
    """The ``StartImage`` of the first pass at ``width`` x ``height``, or None for
    txt2img on a model that takes no conditioning image."""
    if config.init_image is None:
        if not family.inpainting:
            return None
        extra = unmasked_conditioning(backend, width, height)
        return StartImage(None, config.steps, 0, extra=extra)
    if config.mask is not None or config.outpaint is not None:
        return inpaint_start(backend, config, width, height, family.in_channels)
    start = img2img_start(backend, config, width, height)
    if family.inpainting:
        start = replace(start, extra=unmasked_conditioning(backend, width, height))
    return start


def hires_start(backend, family, config: GenerationConfig, latents, target, decoder=None):
    """The ``StartImage`` of hires fix's second pass: the first pass's ``latents``
    enlarged to ``target`` (width, height) by ``config.hires_upscaler`` (see
    :mod:`.hires`; ``decoder``, the networks at the first size, for ``lanczos``), run by
    the img2img rule at ``config.hires_denoise``."""
    target_w, target_h = target
    if config.hires_upscaler.startswith("latent"):
        x0 = upscale_latents(latents, target_h // 8, target_w // 8, config.hires_upscaler)
    else:
        pixels = [decode_image(decoder, latent, refuse_black=False) for latent in latents]
        x0 = np.stack([encode_pixels(backend, lanczos(p, target_w, target_h)) for p in pixels])
    steps = config.hires_steps or config.steps
    start = StartImage(
        latents=x0.astype(np.float32),
        steps=steps,
        start_index=img2img_start_index(steps, config.hires_denoise),
    )
    if family.inpainting:
        start = replace(start, extra=unmasked_conditioning(backend, target_w, target_h))
    return start


def steps_of_passes(config: GenerationConfig, start: StartImage | None) -> tuple[int, ...]:
    """The U-Net steps of each pass: the first, and hires fix's second."""
    first = config.steps if start is None else start.steps - start.start_index
    if not config.hires:
        return (first,)
    return first, img2img_steps(config.hires_steps or config.steps, config.hires_denoise)


__all__ = ["hires_start", "steps_of_passes", "task_start"]
