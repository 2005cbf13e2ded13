"""Outpainting's canvas: the image padded on each side, the new border filled, and the
mask that says to repaint it.

The border is filled by stretching the image's outermost rows and columns across it
(each new pixel copies the nearest edge pixel), the same fill as A1111's "Resize and
fill" and ``--resize fit``. It gives the sampler the edge colours to continue from;
with ``--inpaint-fill original`` that is what the new area starts from, and with
``noise`` or ``latent-nothing`` it is replaced anyway. The mask is a hard 1 on the
border and 0 over the original; blurring it (``--mask-blur``) lets the seam be
repainted a few pixels into the original, as A1111's outpainting scripts do.
"""

from __future__ import annotations

import numpy as np


def outpaint_canvas(
    pixels: np.ndarray, left: int, top: int, right: int, bottom: int
) -> tuple[np.ndarray, np.ndarray]:
    """``pixels`` (H, W, 3) uint8 with ``left``, ``top``, ``right``, ``bottom`` pixels
    added: ``(canvas, mask)``, the canvas (H + top + bottom, W + left + right, 3) uint8
    with the border filled from the edges, and the mask float32 of the canvas's size,
    1 on the border and 0 inside."""
    pixels = np.asarray(pixels)
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ValueError(
            f"outpaint_canvas takes (H, W, 3) uint8, got {pixels.shape} {pixels.dtype}"
        )
    sides = (left, top, right, bottom)
    if any(int(side) != side or side < 0 for side in sides):
        raise ValueError(f"outpaint sides must be whole pixels >= 0, got {sides}")
    left, top, right, bottom = (int(side) for side in sides)
    canvas = np.pad(pixels, ((top, bottom), (left, right), (0, 0)), mode="edge")
    height, width = pixels.shape[:2]
    mask = np.ones(canvas.shape[:2], dtype=np.float32)
    mask[top : top + height, left : left + width] = 0.0
    return canvas, mask


__all__ = ["outpaint_canvas"]
