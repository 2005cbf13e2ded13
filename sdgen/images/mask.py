"""Masks for inpainting: blurred, brought to the latent grid, and the region that
A1111's "only masked" works on.

A mask is an (H, W) float array in [0, 1] (``sdgen.images.mask_array``): 1 is
repainted, 0 kept. Whose behaviour each step follows, and why:

- ``blur_mask``: A1111's ``mask_blur``, a Gaussian of standard deviation ``radius``
  pixels truncated at 2.5 sigma (its kernel is ``2 * int(2.5 * radius + 0.5) + 1`` taps,
  OpenCV's ``GaussianBlur``), applied across then down, with OpenCV's default
  reflect-101 border, so an image blurred here matches A1111's up to the 8-bit rounding
  it does after each pass (sdgen keeps floats). ``--mask-blur`` has A1111's meaning.
- ``latent_mask``: diffusers' inpainting pipelines, which the proofs compare against:
  the mask processor binarises at 0.5 (``VaeImageProcessor(do_binarize=True)``) and
  ``prepare_mask_latents`` shrinks it to the latent grid with ``interpolate``'s default
  nearest mode (the top-left pixel of each 8x8 cell). A1111 rounds the mask to {0, 1}
  too (``torch.round`` for 9-channel models, ``np.around`` for the latent blend), so
  ``binary=True`` is what both tools feed a U-Net; ``binary=False`` averages each cell
  instead (``interpolate``'s ``area`` mode), for a soft blend.
- ``masked_region``: A1111's "only masked" (``get_crop_region`` then
  ``expand_crop_region``, which diffusers copies as ``get_crop_region``): the box around
  the mask, padded, then grown to the aspect ratio of the size it is generated at,
  centred where it can be and slid back inside the image where it cannot.
"""

from __future__ import annotations

import numpy as np

#: Below this a mask value would be stored as 0 in an 8-bit mask (A1111's masks are
#: 8-bit, and it counts any non-zero pixel as masked).
_ZERO = 0.5 / 255.0


def blur_mask(mask: np.ndarray, radius: float, radius_y: float | None = None) -> np.ndarray:
    """``mask`` (H, W) blurred by a Gaussian of ``radius`` pixels (A1111's
    ``mask_blur``; ``radius_y`` gives the vertical one, A1111's ``mask_blur_y``, and
    defaults to ``radius``). 0 leaves that direction alone. Returns float32 (H, W)."""
    mask = _as_mask(mask)
    radius_y = radius if radius_y is None else radius_y
    if radius < 0 or radius_y < 0:
        raise ValueError(f"a blur radius must be at least 0, got {radius}, {radius_y}")
    out = _blur_axis(mask, float(radius), axis=1)
    out = _blur_axis(out, float(radius_y), axis=0)
    return out.astype(np.float32)


def latent_mask(mask: np.ndarray, height: int, width: int, binary: bool) -> np.ndarray:
    """``mask`` (H, W) on the latent grid: float32 (``height``, ``width``, 1).

    ``binary``: rounded to {0, 1} at 0.5 first (diffusers; A1111 for 9-channel models),
    then each latent cell takes its top-left pixel (nearest). Otherwise each cell is the
    mean of the pixels it covers."""
    mask = _as_mask(mask)
    if height < 1 or width < 1:
        raise ValueError(f"a latent grid must be at least 1x1, got {width}x{height}")
    if binary:
        rows = _nearest(mask.shape[0], height)
        cols = _nearest(mask.shape[1], width)
        small = (mask >= 0.5).astype(np.float32)[np.ix_(rows, cols)]
    else:
        small = _area(_area(mask, height, axis=0), width, axis=1)
    return small.astype(np.float32)[..., None]


def masked_region(
    mask: np.ndarray, padding: int, width: int, height: int
) -> tuple[int, int, int, int]:
    """The region "only masked" inpaints: ``(x0, y0, x1, y1)`` with ``x1``, ``y1``
    exclusive.

    The bounding box of every pixel above zero (as an 8-bit mask would store it), grown
    by ``padding`` pixels on each side, then grown along its short side to the aspect
    ratio ``width``:``height`` of the size it will be generated at, all clamped to the
    mask's own size. When the image is too small for that ratio the region stops at its
    edges and keeps a different ratio (A1111 does the same; ``resize_image`` with
    ``fit`` makes up the rest). The growth is A1111's, done in integers where it divides
    by a float ratio, so about one region in a few hundred is a pixel taller or wider
    than A1111's. An empty mask gives the whole image."""
    mask = _as_mask(mask)
    if padding < 0 or width < 1 or height < 1:
        raise ValueError(f"need padding >= 0 and a size, got {padding}, {width}x{height}")
    image_h, image_w = mask.shape
    rows = np.flatnonzero((mask >= _ZERO).any(axis=1))
    cols = np.flatnonzero((mask >= _ZERO).any(axis=0))
    if rows.size == 0:
        return 0, 0, image_w, image_h
    x0 = max(int(cols[0]) - padding, 0)
    y0 = max(int(rows[0]) - padding, 0)
    x1 = min(int(cols[-1]) + 1 + padding, image_w)
    y1 = min(int(rows[-1]) + 1 + padding, image_h)
    region_w, region_h = x1 - x0, y1 - y0
    # A1111's float ratios, done in integers so no side comes out a pixel short.
    if region_w * height > region_h * width:
        y0, y1 = _grow(y0, y1, (region_w * height - region_h * width) // width, image_h)
    else:
        x0, x1 = _grow(x0, x1, (region_h * width - region_w * height) // height, image_w)
    return x0, y0, x1, y1


def crop(array: np.ndarray, region: tuple[int, int, int, int]) -> np.ndarray:
    """The ``(x0, y0, x1, y1)`` region of an (H, W, ...) image or mask, as a copy."""
    x0, y0, x1, y1 = region
    if not (0 <= x0 < x1 <= array.shape[1] and 0 <= y0 < y1 <= array.shape[0]):
        raise ValueError(f"region {region} is not inside a {array.shape[1]}x{array.shape[0]} image")
    return np.array(array[y0:y1, x0:x1], copy=True)


def is_empty(mask: np.ndarray) -> bool:
    """True when nothing is to be repainted: every value is black as an 8-bit mask would
    store it (below 0.5/255). A dark grey mask is not empty: it repaints softly."""
    return not bool((_as_mask(mask) >= _ZERO).any())


def _grow(start: int, end: int, extra: int, limit: int) -> tuple[int, int]:
    """[start, end) grown by ``extra`` pixels split about its centre, slid back inside
    [0, limit) when it runs over, and cut at the edges when it is longer than that."""
    start -= extra // 2
    end += extra - extra // 2
    if end > limit:
        start -= end - limit
        end = limit
    if start < 0:
        end -= start
        start = 0
    return start, min(end, limit)


def _blur_axis(mask: np.ndarray, sigma: float, axis: int) -> np.ndarray:
    if sigma <= 0:
        return mask
    half = int(2.5 * sigma + 0.5)
    taps = np.arange(-half, half + 1, dtype=np.float64)
    weights = np.exp(-(taps**2) / (2.0 * sigma * sigma))
    weights /= weights.sum()
    pad = [(0, 0), (0, 0)]
    pad[axis] = (half, half)
    # numpy's "reflect" is OpenCV's BORDER_REFLECT_101 (the edge pixel is not repeated).
    padded = np.pad(mask.astype(np.float64), pad, mode="reflect")
    size = mask.shape[axis]
    out = np.zeros(mask.shape, dtype=np.float64)
    for offset, weight in enumerate(weights):
        out += weight * np.take(padded, np.arange(offset, offset + size), axis=axis)
    return np.clip(out, 0.0, 1.0)


def _nearest(size: int, out: int) -> np.ndarray:
    """Source indices of torch's ``interpolate(mode="nearest")``: floor(i * size / out),
    the scale taken in float32 as torch does."""
    if out == size:
        return np.arange(size)
    scale = np.float32(size / out)
    index = np.floor(np.arange(out, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(index, size - 1)


def _area(mask: np.ndarray, out: int, axis: int) -> np.ndarray:
    """Means over torch's adaptive-average-pool windows [floor(i*n/out), ceil((i+1)*n/out))."""
    size = mask.shape[axis]
    i = np.arange(out)
    starts = (i * size) // out
    ends = -((-(i + 1) * size) // out)
    csum = np.concatenate(
        [
            np.zeros_like(np.take(mask, [0], axis=axis), dtype=np.float64),
            np.cumsum(mask, axis=axis, dtype=np.float64),
        ],
        axis=axis,
    )
    sums = np.take(csum, ends, axis=axis) - np.take(csum, starts, axis=axis)
    shape = [1, 1]
    shape[axis] = out
    return sums / (ends - starts).reshape(shape)


def _as_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[..., 0]
    if mask.ndim != 2 or 0 in mask.shape:
        raise ValueError(f"a mask is an (H, W) array, got shape {mask.shape}")
    return mask.astype(np.float32, copy=False)


__all__ = ["blur_mask", "crop", "is_empty", "latent_mask", "masked_region"]
