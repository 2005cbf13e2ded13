"""The stages of a generation that hold no network: the starting latents, the timestep
embedding, and latents to pixels (with an image task's kept pixels put back)."""

from __future__ import annotations

import math

import numpy as np

from ..errors import BadImageError
from ..images import paste_back, paste_region
from ..noise import DEFAULT_RNG, LatentNoise


def timestep_embedding(timestep: float, dim: int = 320) -> np.ndarray:
    """The sinusoidal embedding of ``timestep`` that the U-Net takes: cos then sin of
    ``timestep * 10000^(-i / (dim/2))`` for i in [0, dim/2). ``dim`` is the family's
    ``timestep_embedding_dim`` (SD's: 320)."""
    half = dim // 2
    freqs = np.exp(-math.log(10000.0) * np.arange(half, dtype=np.float64) / half)
    args = float(timestep) * freqs
    return np.concatenate([np.cos(args), np.sin(args)]).astype(np.float32)


def initial_latents(seed: int, height: int, width: int, rng: str = DEFAULT_RNG) -> np.ndarray:
    """The unit starting noise of one image, (height/8, width/8, 4) standard normal: the
    first draw of its ``rng`` generator (:mod:`sdgen.noise`), the same on every machine
    and batch size."""
    return LatentNoise(rng, seed).draw(height, width)


def to_pixels(decoded: np.ndarray, refuse_black: bool = True) -> np.ndarray:
    """A decoded image in [-1, 1], (H, W, 3), as uint8 pixels; ``BadImageError`` for the
    outputs no real decode gives (NaN, infinities, and all black when ``refuse_black``:
    txt2img's check, which an image task, whose result may be dark, leaves out)."""
    decoded = np.asarray(decoded, dtype=np.float32)
    if not np.isfinite(decoded).all():
        raise BadImageError(
            "the networks produced NaN or infinite values, so no image was saved; "
            "with --mixed-precision this can be float16 overflow: try without it"
        )
    pixels = np.clip(np.round((decoded + 1.0) * 127.5), 0, 255).astype(np.uint8)
    if refuse_black and not pixels.any():
        # what float16 underflow or a broken conversion gives; no real decode is
        # exactly black everywhere (the VAE always leaves some texture)
        raise BadImageError(
            "the networks produced an all-black image, so it was not saved; "
            "with --mixed-precision this can be float16 underflow: try without it"
        )
    return pixels


def decode_image(networks, latent: np.ndarray, start=None, refuse_black=None) -> np.ndarray:
    """One image's uint8 pixels from its ``latent`` (h, w, 4), decoded by ``networks``;
    an image task's original pixels put back where its mask keeps them (``start``, a
    ``StartImage``). Only txt2img refuses an all-black result (``refuse_black`` None:
    when there is no start image): an image task may legitimately be dark."""
    if refuse_black is None:
        refuse_black = start is None or start.latents is None
    decoded = np.asarray(networks.decode(latent[None]), dtype=np.float32)[0]
    pixels = to_pixels(decoded, refuse_black=refuse_black)
    if start is not None and start.overlay is not None:
        pixels = paste_back(start.overlay[0], pixels, start.overlay[1])
    if start is not None and start.region is not None:
        canvas, region, mask = start.region
        pixels = paste_region(canvas, pixels, region, mask)
    return pixels


__all__ = ["decode_image", "initial_latents", "timestep_embedding", "to_pixels"]
