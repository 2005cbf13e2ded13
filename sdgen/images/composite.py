"""Putting an inpainted result back over the original image.

Whatever the latents did, the pixels the mask keeps should be the original's, up to the
blur: A1111 pastes the original back over every inpainted result as an overlay whose
opacity is the inverted (blurred) mask (``apply_overlay``; diffusers'
``VaeImageProcessor.apply_overlay`` is the same), so the VAE's round trip never touches
the kept region. sdgen does the same sum in floats::

    result = original * (1 - mask) + generated * mask, rounded

For "only masked", the generated region is first scaled back into its place with the
``crop`` geometry, as both tools do (A1111's ``uncrop`` uses "Crop and resize").
"""

from __future__ import annotations

import numpy as np

from .resize import resize_image


def paste_back(original: np.ndarray, generated: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``original * (1 - mask) + generated * mask``, rounded to uint8 (H, W, 3).

    original, generated: (H, W, 3) uint8; mask: (H, W) float in [0, 1], 1 where the
    generated pixels are kept."""
    original = _rgb(original, "original")
    generated = _rgb(generated, "generated")
    mask = np.clip(np.asarray(mask, dtype=np.float32), 0.0, 1.0)
    if generated.shape != original.shape or mask.shape != original.shape[:2]:
        raise ValueError(
            f"paste_back needs one size: original {original.shape}, generated "
            f"{generated.shape}, mask {mask.shape}"
        )
    m = mask[..., None]
    blended = original.astype(np.float32) * (1.0 - m) + generated.astype(np.float32) * m
    return np.clip(np.floor(blended + 0.5), 0, 255).astype(np.uint8)


def paste_region(
    original: np.ndarray,
    generated_region: np.ndarray,
    region: tuple[int, int, int, int],
    mask: np.ndarray,
) -> np.ndarray:
    """An "only masked" result put back: ``generated_region`` (any size, uint8 RGB) is
    scaled to the ``(x0, y0, x1, y1)`` region with the ``crop`` geometry, placed there,
    and blended over ``original`` with the full-size ``mask`` (H, W) by ``paste_back``.
    Outside the region the result is the original wherever the mask is 0, which it is
    by construction of ``masked_region``."""
    original = _rgb(original, "original")
    x0, y0, x1, y1 = region
    if not (0 <= x0 < x1 <= original.shape[1] and 0 <= y0 < y1 <= original.shape[0]):
        size = f"{original.shape[1]}x{original.shape[0]}"
        raise ValueError(f"region {region} is not inside a {size} image")
    generated_region = _rgb(generated_region, "generated region")
    placed = original.copy()
    placed[y0:y1, x0:x1] = resize_image(generated_region, x1 - x0, y1 - y0, "crop")
    return paste_back(original, placed, mask)


def overlay_mask(blurred: np.ndarray, inpaint_area: str) -> np.ndarray:
    """The mask A1111 pastes with, from the blurred mask: for ``full`` ("Whole
    picture") it doubles it and clips at 1, so every pixel the rounded latent mask
    repainted (blurred value >= 0.5) shows the generated pixels fully and only the
    blur's outer half fades to the original; for ``masked`` ("Only masked") it is the
    blurred mask as it is. float32 (H, W)."""
    blurred = np.asarray(blurred, dtype=np.float32)
    if inpaint_area == "full":
        return np.clip(blurred * 2.0, 0.0, 1.0)
    if inpaint_area == "masked":
        return np.clip(blurred, 0.0, 1.0)
    raise ValueError(f"inpaint area must be full or masked, got {inpaint_area!r}")


def _rgb(array: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"{name} must be (H, W, 3) uint8, got {array.shape} {array.dtype}")
    return array


__all__ = ["overlay_mask", "paste_back", "paste_region"]
