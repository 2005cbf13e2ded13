"""``ImageInput``: an init image or mask as a request holds it, and ``mask_array``.

A path, a PIL image or a NumPy array is read once, when the request is built, so a
missing, unreadable or oversized file is refused before any work starts, with one line
that names it. What is kept is the RGB pixels and a sha256 that names them in records
and in the resume identity: the file's bytes for a path (what ``sha256sum`` says), the
decoded pixels for an array or a PIL image.

Reading follows what users of other tools expect a file to look like:

- EXIF orientation is applied (a phone's portrait JPEG stands upright), as A1111 and
  diffusers' ``load_image`` do with Pillow's ``ImageOps.exif_transpose``.
- Transparency (RGBA, LA, a palette with a transparent index) is flattened on white,
  A1111's default ``img2img_background_color``; the alpha is kept beside the pixels for
  ``mask_array``.
- Greyscale, palette, CMYK and 1-bit images become RGB; 16-bit greyscale (Pillow's
  ``I;16`` modes, and ``I``, which is how Pillow hands out 16-bit PNG/TIFF) is scaled to
  8 bits by ``round(v / 257)``, where Pillow's own ``convert`` would clip it to white;
  32-bit float greyscale (``F``) is taken as 0..255 and clipped, as Pillow does.
- Images over Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``
  pixels) are refused, both where Pillow warns and where it raises.
- Only the first frame of an animated GIF/PNG/WebP is read.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UsageError


class ImageInputError(UsageError):
    """An init image or mask is missing, unreadable, not an image or too large."""


@dataclass(frozen=True)
class ImageInput:
    """An image a request starts from.

    label: the path as given, or ``<array>`` / ``<PIL image>``.
    sha256: of the file's bytes for a path, of ``pixels`` (and ``alpha``) otherwise.
    pixels: (H, W, 3) uint8 RGB, EXIF orientation applied, transparency flattened on
        white.
    alpha: (H, W) uint8 opacity when the source had transparency (some pixel less than
        fully opaque), else None. ``mask_array`` reads a mask from it.
    """

    label: str
    sha256: str
    pixels: np.ndarray = field(compare=False, repr=False)
    alpha: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def path(self) -> Path | None:
        """The file it was read from, or None for an array or PIL image."""
        return None if self.label.startswith("<") else Path(self.label)

    @classmethod
    def of(cls, source, what: str = "init image") -> ImageInput:
        """``source`` read as RGB: a path (``str`` or ``Path``), a PIL image, a NumPy
        array or an ``ImageInput`` (returned as it is).

        Arrays (the Python API) are (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), either
        uint8 in 0..255 or float (float16/32/64) in [0, 1], which is scaled by 255 and
        rounded; a fourth channel is alpha. Any other dtype, a float outside [0, 1] or
        NaN is refused.

        Raises ``ImageInputError`` (exit status 2), whose one-line message names
        ``what``, when the source is missing, a directory, not an image, truncated, or
        larger than Pillow's decompression-bomb limit.
        """
        if isinstance(source, ImageInput):
            return source
        from PIL import Image

        if isinstance(source, str | Path):
            return cls._of_path(source, what)
        if isinstance(source, Image.Image):
            _check_size(source.width, source.height, what, "the PIL image")
            pixels, alpha = _decode(source, what, "the PIL image")
            label = "<PIL image>"
        elif isinstance(source, np.ndarray):
            pixels, alpha = _array_rgb(source, what)
            label = "<array>"
        else:
            raise ImageInputError(
                f"{what} must be a path, a PIL image or a NumPy array, got {type(source).__name__}"
            )
        digest = hashlib.sha256(pixels.tobytes())
        if alpha is not None:
            digest.update(alpha.tobytes())
        return cls(label, digest.hexdigest(), pixels, alpha)

    @classmethod
    def _of_path(cls, source: str | Path, what: str) -> ImageInput:
        from PIL import Image, UnidentifiedImageError

        path = Path(source).expanduser()
        if path.is_dir():
            raise ImageInputError(f"{what} {path} is a folder, not an image file")
        if not path.is_file():
            raise ImageInputError(f"{what} {path} does not exist")
        try:
            data = path.read_bytes()
        except OSError as error:
            raise ImageInputError(f"cannot read {what} {path}: {_one_line(error)}") from error
        try:
            # Pillow warns above MAX_IMAGE_PIXELS and raises above twice that; both are
            # refused, so a request never starts decoding a bomb.
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data)) as image:
                    image.load()
                    pixels, alpha = _decode(image, what, str(path))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise ImageInputError(_too_large(what, str(path))) from error
        except UnidentifiedImageError as error:
            raise ImageInputError(f"{what} {path} is not an image Pillow can read") from error
        except (OSError, ValueError, SyntaxError) as error:
            raise ImageInputError(f"cannot read {what} {path}: {_one_line(error)}") from error
        return cls(str(source), hashlib.sha256(data).hexdigest(), pixels, alpha)


def mask_array(image: ImageInput) -> np.ndarray:
    """A mask image as (H, W) float32 in [0, 1]: 1 is repainted, 0 is kept.

    An image with transparency is read from its alpha: opacity above 128 is 1, the
    rest 0, as A1111's ``create_binary_mask`` does for the RGBA masks its sketch tool
    paints (strokes on a transparent layer). Any other image is read from its
    luminance, Pillow's ``convert("L")`` (ITU-R 601: 0.299 R + 0.587 G + 0.114 B), which
    A1111 and diffusers' mask processor both use, keeping grey levels as soft values.
    """
    if image.alpha is not None:
        return (image.alpha > 128).astype(np.float32)
    from PIL import Image

    luminance = np.asarray(Image.fromarray(image.pixels).convert("L"), dtype=np.float32)
    return luminance / np.float32(255.0)


def _decode(image, what: str, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """A PIL image as (RGB uint8 flattened on white, alpha uint8 or None)."""
    image = _upright(image)
    mode = image.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        grey = np.asarray(image, dtype=np.float64)
        if mode != "F":
            # 16-bit greyscale: 65535 is white. Pillow's convert would clip at 255.
            grey = grey / 257.0
        grey = np.clip(np.floor(grey + 0.5), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2), None
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode in ("P", "L", "RGB") and "transparency" in image.info
    )
    if not has_alpha:
        return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8)), None
    rgba = np.asarray(image.convert("RGBA"), dtype=np.uint8)
    return _flatten(rgba[..., :3], rgba[..., 3])


def _flatten(rgb: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """RGB over white by ``alpha`` (0..255), and the alpha unless fully opaque."""
    if (alpha == 255).all():
        return np.ascontiguousarray(rgb, dtype=np.uint8), None
    a = alpha.astype(np.float32)[..., None] / 255.0
    flat = rgb.astype(np.float32) * a + 255.0 * (1.0 - a)
    flat = np.clip(np.floor(flat + 0.5), 0, 255).astype(np.uint8)
    return flat, np.ascontiguousarray(alpha, dtype=np.uint8)


def _upright(image):
    """``image`` turned by its EXIF orientation; unchanged when its EXIF is unreadable
    (a broken tag should not refuse pixels that decode)."""
    from PIL import ImageOps

    try:
        return ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError, KeyError, TypeError):
        return image


def _array_rgb(array: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray | None]:
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4) or 0 in array.shape:
        raise ImageInputError(
            f"{what} must be an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) array, "
            f"got shape {array.shape}"
        )
    _check_size(array.shape[1], array.shape[0], what, "the array")
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or array.min() < 0.0 or array.max() > 1.0:
            raise ImageInputError(
                f"{what}: a float array must hold values in [0, 1], got "
                f"{float(np.nanmin(array)):g}..{float(np.nanmax(array)):g}"
                + ("" if np.isfinite(array).all() else " and NaN/inf")
            )
        array = np.floor(array.astype(np.float64) * 255.0 + 0.5).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise ImageInputError(
            f"{what} must be uint8 (0..255) or float in [0, 1] pixels, got {array.dtype}"
        )
    if array.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(array, 3, axis=2)), None
    if array.shape[2] == 4:
        return _flatten(array[..., :3], array[..., 3])
    return np.ascontiguousarray(array), None


def _check_size(width: int, height: int, what: str, name: str) -> None:
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and int(width) * int(height) > limit:
        raise ImageInputError(_too_large(what, name, width, height))


def _too_large(what: str, name: str, width: int | None = None, height: int | None = None) -> str:
    from PIL import Image

    size = f" ({width}x{height})" if width is not None else ""
    return (
        f"{what} {name}{size} is larger than Pillow's limit of {Image.MAX_IMAGE_PIXELS} "
        "pixels (a possible decompression bomb)"
    )


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


__all__ = ["ImageInput", "ImageInputError", "mask_array"]
