"""Variation seeds and seed resizing, as AUTOMATIC1111 offers them.

- ``--subseed N --subseed-strength S``: the starting noise is the spherical interpolation
  (slerp) of the seed's noise and the subseed's, ``S`` of the way towards the subseed's:
  0 is the seed's image, 1 the subseed's, and values between give variations that keep
  the noise's statistics (a straight mix of two normals would shrink it).
- ``--seed-resize-from WxH``: the noise is drawn at the old size and centred in the new
  one (cropped where the new size is smaller, with the seed's noise at the new size
  around it where larger), so an image keeps its composition when the size changes.

Image k of a request uses ``seed + k`` and ``subseed + k``. Per-step noise continues from
the seed's own generator, after the starting noise.
"""

from __future__ import annotations

import numpy as np

from . import LatentNoise

#: Below this angle between the two noises, slerp is a straight mix (the same to float32).
_PARALLEL = 1e-4


def slerp(strength: float, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """``strength`` of the way from ``low`` to ``high`` along the great circle, treating
    each whole array as one vector (float32)."""
    low64, high64 = low.astype(np.float64).ravel(), high.astype(np.float64).ravel()
    cos = np.dot(low64, high64) / (np.linalg.norm(low64) * np.linalg.norm(high64))
    omega = np.arccos(np.clip(cos, -1.0, 1.0))
    if omega < _PARALLEL:
        mixed = (1.0 - strength) * low64 + strength * high64
    else:
        mixed = (
            np.sin((1.0 - strength) * omega) * low64 + np.sin(strength * omega) * high64
        ) / np.sin(omega)
    return mixed.reshape(low.shape).astype(np.float32)


def centre(noise: np.ndarray, around: np.ndarray) -> np.ndarray:
    """``noise`` (h, w, c) placed at the centre of ``around`` (H, W, c): cropped to it
    where larger, with ``around`` showing at the edges where smaller."""
    out = around.copy()
    (h, w), (big_h, big_w) = noise.shape[:2], around.shape[:2]
    dy, dx = (big_h - h) // 2, (big_w - w) // 2
    rows, cols = min(h, big_h), min(w, big_w)
    ty, tx, sy, sx = max(dy, 0), max(dx, 0), max(-dy, 0), max(-dx, 0)
    out[ty : ty + rows, tx : tx + cols] = noise[sy : sy + rows, sx : sx + cols]
    return out


def starting_noise(
    generator: LatentNoise,
    height: int,
    width: int,
    subseed: int | None = None,
    subseed_strength: float = 0.0,
    resize_from: tuple[int, int] | None = None,
) -> np.ndarray:
    """The starting (height/8, width/8, 4) noise of one image from its seed's
    ``generator``, with a variation ``subseed`` mixed in at ``subseed_strength`` and the
    noise drawn at ``resize_from`` = (width, height) and centred, where given."""
    from_width, from_height = resize_from or (width, height)
    noise = generator.draw(from_height, from_width)
    if subseed is not None and subseed_strength > 0:
        sub = LatentNoise(generator.kind, subseed).draw(from_height, from_width)
        noise = slerp(subseed_strength, noise, sub)
    if (from_width, from_height) != (width, height):
        noise = centre(noise, generator.draw(height, width))
    return noise


__all__ = ["centre", "slerp", "starting_noise"]
