"""img2img: start the denoising part-way down the schedule from an encoded image.

The init image is brought to the requested size (``--resize``, :mod:`sdgen.images`),
encoded by the VAE encoder (``backend.encode_images``: the posterior's mean times
0.18215, as keras_cv's ``ImageEncoder`` gives it; diffusers samples from the posterior
by default, A1111 too; the mean makes an image's latents depend on the image alone,
not on a second random draw), noised to the first remaining step's level
(``SamplerRun.add_noise``) and denoised from there.

How many steps run, for ``--steps N --strength S``:

- sdgen follows A1111 (``setup_img2img_steps``): ``t_enc = int(min(S, 0.999) * N)``
  steps of an N-step schedule, its last ``t_enc``. A1111's timestep samplers (DDIM)
  run exactly those; its k-diffusion samplers start one noise level earlier
  (``sigmas[N - t_enc - 1:]``) and so make one more U-Net call.
- diffusers (``get_timesteps``): ``min(int(N * S), N)``: the same count for every
  strength below 0.999, and at strength 1 the whole schedule where A1111 runs N - 1
  steps from a noised init image.

A strength so small that ``t_enc`` is 0 runs nothing and is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..images import resize_image
from ..samplers.run import check_strength

#: A1111 caps the strength below 1 so that the first step still sees the init image.
MAX_FRACTION = 0.999


def img2img_steps(steps: int, strength: float) -> int:
    """The denoising steps an img2img run of ``steps`` at ``strength`` makes (A1111's
    ``t_enc``); ``ConfigError`` when none would run."""
    check_strength(strength)
    run = int(min(float(strength), MAX_FRACTION) * steps)
    if run < 1:
        raise ConfigError(
            f"strength {strength} of {steps} steps runs no step (A1111's rule: "
            f"int(strength x steps)); use a strength of at least {1 / steps:.3g} or more steps"
        )
    return run


def img2img_start_index(steps: int, strength: float) -> int:
    """The ``start_index`` of ``sampler.start`` for an img2img run: the schedule's
    first ``steps - img2img_steps(steps, strength)`` steps are skipped."""
    return steps - img2img_steps(steps, strength)


def to_model_range(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels (..., 3) as the VAE takes them: float32 in [-1, 1]."""
    return np.asarray(pixels, dtype=np.float32) / np.float32(127.5) - np.float32(1.0)


def encode_pixels(backend, pixels: np.ndarray) -> np.ndarray:
    """One image's latents (h, w, 4) from uint8 pixels (H, W, 3) or float [-1, 1]."""
    images = pixels if pixels.dtype != np.uint8 else to_model_range(pixels)
    return np.asarray(backend.encode_images(images[None].astype(np.float32)))[0]


@dataclass(frozen=True)
class StartImage:
    """What an image task starts from, made once per request (every image of a batch
    shares it; only their noise differs).

    latents: the encoded image (h, w, 4), already scaled: ``x0`` of ``add_noise``.
    steps: the schedule's length; start_index: where its run begins.
    keep: for inpainting with a 4-channel U-Net, the latent mask of what is KEPT
        (h, w, 1): after each step those latents are put back, noised to the next
        step's level (None: plain img2img).
    fill: inpainting's ``inpaint_fill`` for the masked latents.
    extra: for 9-channel U-Nets, ``[mask, masked image latents]`` (h, w, 5), put after
        the latents on every U-Net call.
    overlay: ``(original uint8 (H, W, 3), mask float (H, W))``: the pixels put back over
        the decoded result, where the mask is below 1 (None: nothing put back).
    region: "only masked": ``(canvas uint8, region, mask)``, the full image the result is
        pasted into, the region it came from and the mask it is pasted with.
    """

    latents: np.ndarray
    steps: int
    start_index: int
    keep: np.ndarray | None = None
    fill: str = "original"
    extra: np.ndarray | None = None
    overlay: tuple[np.ndarray, np.ndarray] | None = None
    region: tuple[np.ndarray, tuple[int, int, int, int], np.ndarray] | None = None


def img2img_start(backend, config, width: int, height: int) -> StartImage:
    """The ``StartImage`` of plain img2img: ``config.init_image`` resized to
    ``width`` x ``height`` by ``config.resize`` and encoded."""
    pixels = resize_image(config.init_image.pixels, width, height, config.resize)
    return StartImage(
        latents=encode_pixels(backend, pixels),
        steps=config.steps,
        start_index=img2img_start_index(config.steps, config.strength),
    )


__all__ = [
    "MAX_FRACTION",
    "StartImage",
    "encode_pixels",
    "img2img_start",
    "img2img_start_index",
    "img2img_steps",
    "to_model_range",
]
