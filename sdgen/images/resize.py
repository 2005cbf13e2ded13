"""Bringing an init image (and its mask) to the size the networks run at.

The three modes are A1111's ``resize_image`` modes, which diffusers' ``VaeImageProcessor``
also has (``resize_mode`` ``default`` / ``crop`` / ``fill``), under sdgen's names:

- ``stretch``: A1111's "Just resize": each side scaled on its own, so the aspect ratio
  may change.
- ``crop``: "Crop and resize": scaled evenly until it covers the target, then centred
  and the overflow cut off (sdgen's default: it neither distorts nor invents pixels).
- ``fit``: "Resize and fill": scaled evenly until it fits inside, centred, and the bands
  left over filled from the image's edge, as A1111 and diffusers fill them: each band
  repeats one line, Pillow's (bicubic, its default) resize of a zero-thickness box on
  the edge: a blend of the outermost two rows or columns, not a copy of the last one.
  Where both tools leave the last row or column black when the spare size is odd,
  sdgen fills it like the rest of its band.

The scaled size is A1111's integer arithmetic (``src_h * width // src_w`` and its kin)
and the resampling Lanczos, A1111's choice when no upscaler model is set and diffusers'
default, so an image resized here matches one resized by either tool. Masks go through
the same geometry with the same filter on float values, clipped back to [0, 1].
"""

from __future__ import annotations

import numpy as np

#: sdgen's names for A1111's "Crop and resize", "Resize and fill", "Just resize"
#: (``sdgen.config.RESIZE_MODES`` is the public list; this module cannot import it).
_MODES = ("crop", "fit", "stretch")


def size_for_image(width: int, height: int) -> tuple[int, int]:
    """The network size for an image of ``width`` x ``height`` pixels: each side rounded
    to the nearest multiple of 64 (halves round up), and at least 64."""
    return _round64(width), _round64(height)


def resize_image(pixels: np.ndarray, width: int, height: int, mode: str) -> np.ndarray:
    """(H, W, 3) uint8 pixels brought to ``width`` x ``height`` by ``mode`` (one of
    ``crop``, ``fit``, ``stretch``); a (height, width, 3) uint8 array. An image already that size is
    returned as a copy, untouched."""
    pixels = np.asarray(pixels)
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"resize_image takes (H, W, 3) uint8, got {pixels.shape} {pixels.dtype}")
    return _resize(pixels, width, height, mode)


def resize_mask(mask: np.ndarray, width: int, height: int, mode: str) -> np.ndarray:
    """A (H, W) float mask brought to ``width`` x ``height`` with the same geometry as
    ``resize_image`` (so it stays over the same pixels); float32 (height, width) in
    [0, 1]. Lanczos rings a little around hard edges; the values are clipped."""
    mask = np.asarray(mask, dtype=np.float32)
    if mask.ndim != 2:
        raise ValueError(f"resize_mask takes an (H, W) mask, got shape {mask.shape}")
    return np.clip(_resize(mask, width, height, mode), 0.0, 1.0)


def resize_note(
    src_w: int, src_h: int, width: int, height: int, mode: str, what: str = "init image"
) -> str | None:
    """One line saying what ``resize_image`` does to a ``src_w`` x ``src_h`` image
    (``what`` names it), or None when it is already ``width`` x ``height``."""
    _check(src_w, src_h, width, height, mode)
    if (src_w, src_h) == (width, height):
        return None
    scaled_w, scaled_h, x, y = placement(src_w, src_h, width, height, mode)
    start = f"{what} {src_w}x{src_h}"
    if (scaled_w, scaled_h) == (width, height):
        same_shape = src_w * height == src_h * width
        if same_shape:
            return f"{start} scaled to {width}x{height}"
        aspects = f"aspect {src_w / src_h:.3g} became {width / height:.3g}"
        return f"{start} stretched to {width}x{height} (--resize {mode}: {aspects})"
    if mode == "crop":
        if scaled_w > width:
            cut = f"{-x} px on the left and {scaled_w - width + x} on the right"
        else:
            cut = f"{-y} px at the top and {scaled_h - height + y} at the bottom"
        return (
            f"{start} scaled to {scaled_w}x{scaled_h} and cropped to {width}x{height}, "
            f"cutting {cut} (--resize crop; fit keeps it all, stretch distorts it)"
        )
    if scaled_w < width:
        band = f"{x} px on the left and {width - scaled_w - x} on the right"
    else:
        band = f"{y} px at the top and {height - scaled_h - y} at the bottom"
    return (
        f"{start} scaled to {scaled_w}x{scaled_h} and filled out to {width}x{height}, "
        f"{band} stretched from its edges (--resize fit)"
    )


def placement(
    src_w: int, src_h: int, width: int, height: int, mode: str
) -> tuple[int, int, int, int]:
    """Where a ``src_w`` x ``src_h`` image lands in a ``width`` x ``height`` one:
    ``(scaled_w, scaled_h, x, y)``, its scaled size and the output position of its
    top-left corner (negative when ``crop`` cuts it)."""
    _check(src_w, src_h, width, height, mode)
    if mode == "stretch":
        return width, height, 0, 0
    # A1111 compares the ratios as floats and sizes the other side by integer division.
    wider_target = width / height > src_w / src_h
    if mode == "crop":
        if wider_target:
            scaled_w, scaled_h = width, src_h * width // src_w
        else:
            scaled_w, scaled_h = src_w * height // src_h, height
    else:
        if width / height < src_w / src_h:
            scaled_w, scaled_h = width, max(1, src_h * width // src_w)
        else:
            scaled_w, scaled_h = max(1, src_w * height // src_h), height
    return scaled_w, scaled_h, width // 2 - scaled_w // 2, height // 2 - scaled_h // 2


def _resize(array: np.ndarray, width: int, height: int, mode: str) -> np.ndarray:
    src_h, src_w = array.shape[:2]
    scaled_w, scaled_h, x, y = placement(src_w, src_h, width, height, mode)
    scaled = _lanczos(array, scaled_w, scaled_h)
    if mode == "crop":
        return np.ascontiguousarray(scaled[-y : -y + height, -x : -x + width])
    if mode == "fit" and (scaled_w, scaled_h) != (width, height):
        return _fill(scaled, width, height, x, y)
    return scaled


def _fill(scaled: np.ndarray, width: int, height: int, x: int, y: int) -> np.ndarray:
    """``scaled`` placed at (x, y) in a ``width`` x ``height`` array, the bands on either
    side filled as A1111 and diffusers fill them: each band is one line, Pillow's
    resize (with its default filter, bicubic) of a zero-thickness box on the image's
    edge, so a blend of the outermost two rows or columns, repeated across the band."""
    from PIL import Image

    scaled_h, scaled_w = scaled.shape[:2]
    out = np.empty((height, width, *scaled.shape[2:]), dtype=scaled.dtype)
    out[y : y + scaled_h, x : x + scaled_w] = scaled
    image = Image.fromarray(np.ascontiguousarray(scaled))
    bicubic = Image.Resampling.BICUBIC  # what both tools get by naming no filter
    if scaled_h < height:  # bands above and below
        top = image.resize((scaled_w, 1), resample=bicubic, box=(0, 0, scaled_w, 0))
        bottom = image.resize((scaled_w, 1), bicubic, box=(0, scaled_h, scaled_w, scaled_h))
        out[:y, x : x + scaled_w] = np.asarray(top)
        out[y + scaled_h :, x : x + scaled_w] = np.asarray(bottom)
    if scaled_w < width:  # bands left and right
        left = image.resize((1, scaled_h), resample=bicubic, box=(0, 0, 0, scaled_h))
        right = image.resize((1, scaled_h), bicubic, box=(scaled_w, 0, scaled_w, scaled_h))
        out[y : y + scaled_h, :x] = np.asarray(left)
        out[y : y + scaled_h, x + scaled_w :] = np.asarray(right)
    return out


def _lanczos(array: np.ndarray, width: int, height: int) -> np.ndarray:
    """``array`` (uint8 RGB or float32 greyscale) resampled to ``width`` x ``height``."""
    if array.shape[:2] == (height, width):
        return array.copy()
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(array))
    resized = image.resize((width, height), resample=Image.Resampling.LANCZOS)
    return np.asarray(resized, dtype=array.dtype).copy()


def _round64(size: int) -> int:
    size = int(size)
    if size < 1:
        raise ValueError(f"an image side must be at least 1 pixel, got {size}")
    return max(64, (size + 32) // 64 * 64)


def _check(src_w: int, src_h: int, width: int, height: int, mode: str) -> None:
    if mode not in _MODES:
        raise ValueError(f"resize mode must be one of {', '.join(_MODES)}, got {mode!r}")
    if min(src_w, src_h, width, height) < 1:
        raise ValueError(f"sizes must be at least 1 pixel, got {src_w}x{src_h} -> {width}x{height}")


__all__ = ["placement", "resize_image", "resize_mask", "resize_note", "size_for_image"]
