"""Hires fix: a txt2img pass at the requested size, enlarged, then an img2img pass at
the larger size with the same prompt, seed and conditioning (A1111's "Hires. fix",
stable-diffusion.cpp's ``--hires``; both default to scale 2 and denoising 0.7).

How the first pass is enlarged (``--hires-upscaler``):

- ``latent`` / ``latent-nearest``: its latents are interpolated to the new grid,
  bilinear or nearest, with half-pixel centres (``torch.nn.functional.interpolate``
  with ``align_corners=False``, which A1111's "Latent" and "Latent (nearest)" call). No
  decode or encode.
- ``lanczos``: decoded, enlarged in pixels with Pillow's Lanczos, and encoded again, as
  A1111's "Lanczos".

The second pass draws its noise afresh from the image's seed at the new size (as A1111
does), runs ``hires_steps`` (default: the first pass's steps) of the schedule by the
img2img rule at ``hires_denoise``, and is decoded at the new size. Both sizes run the
same layers (``backend.networks`` per signature), so the weights are in memory once.
"""

from __future__ import annotations

import numpy as np

from ..config import MAX_SIZE, SIZE_MULTIPLE
from ..errors import ConfigError


def hires_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """The size hires fix makes from ``width`` x ``height`` at ``scale``; ``ConfigError``
    naming the nearest scales that work when it is not whole multiples of 64 or is larger
    than ``MAX_SIZE``."""
    target = (width * scale, height * scale)
    fits = all(
        float(side).is_integer() and int(side) % SIZE_MULTIPLE == 0 and side <= MAX_SIZE
        for side in target
    )
    if fits:
        return int(target[0]), int(target[1])
    scales = working_scales(width, height)
    below = [s for s in scales if s < scale]
    above = [s for s in scales if s > scale]
    nearest = [
        f"{_scale(s)} ({round(width * s)}x{round(height * s)})" for s in below[-1:] + above[:1]
    ]
    made = f"{_side(target[0])}x{_side(target[1])}"
    why = (
        f"larger than {MAX_SIZE}"
        if max(target) > MAX_SIZE
        else f"not multiples of {SIZE_MULTIPLE}, which the U-Net needs"
    )
    hint = f"; scales that work: {' or '.join(nearest)}" if nearest else ""
    raise ConfigError(
        f"hires scale {_scale(scale)} makes {made} from {width}x{height}, {why}{hint}"
    )


def working_scales(width: int, height: int) -> list[float]:
    """Every hires scale from 1 to 8 that makes whole multiples of 64 no larger than
    ``MAX_SIZE`` from ``width`` x ``height``, smallest first."""
    scales = []
    for target in range(width, min(8 * width, MAX_SIZE) + 1, SIZE_MULTIPLE):
        scale = target / width
        other = height * target / width
        if other.is_integer() and int(other) % SIZE_MULTIPLE == 0 and other <= MAX_SIZE:
            scales.append(scale)
    return scales


def _scale(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _side(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def upscale_latents(latents: np.ndarray, height: int, width: int, mode: str) -> np.ndarray:
    """Latents (N, h, w, C) resized to (N, ``height``, ``width``, C): ``latent``
    bilinear, ``latent-nearest`` nearest, both with half-pixel centres (torch's
    ``interpolate`` with ``align_corners=False``)."""
    latents = np.asarray(latents, dtype=np.float32)
    _, h, w, _ = latents.shape
    if mode == "latent-nearest":
        rows = np.minimum((np.arange(height) * h / height).astype(np.int64), h - 1)
        cols = np.minimum((np.arange(width) * w / width).astype(np.int64), w - 1)
        return np.ascontiguousarray(latents[:, rows][:, :, cols])
    if mode != "latent":
        raise ValueError(f"not a latent upscaler: {mode!r}")
    out = _linear(latents, h, height, axis=1)
    return _linear(out, w, width, axis=2).astype(np.float32)


def _linear(array: np.ndarray, size: int, out: int, axis: int) -> np.ndarray:
    """Linear interpolation along ``axis`` from ``size`` to ``out`` samples, half-pixel
    centres, edges clamped."""
    position = np.maximum((np.arange(out) + 0.5) * size / out - 0.5, 0.0)
    low = np.minimum(np.floor(position).astype(np.int64), size - 1)
    high = np.minimum(low + 1, size - 1)
    frac = (position - low).astype(np.float32)
    shape = [1] * array.ndim
    shape[axis] = out
    frac = frac.reshape(shape)
    return np.take(array, low, axis=axis) * (1 - frac) + np.take(array, high, axis=axis) * frac


def lanczos(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """uint8 pixels enlarged to ``width`` x ``height`` with Pillow's Lanczos (the
    ``lanczos`` upscaler)."""
    from PIL import Image

    return np.asarray(Image.fromarray(pixels).resize((width, height), Image.LANCZOS))


__all__ = ["hires_size", "lanczos", "upscale_latents", "working_scales"]
