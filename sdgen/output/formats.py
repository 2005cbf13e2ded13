"""Image files in the formats sdgen writes, each with its infotext where AUTOMATIC1111
puts it, so that A1111's "PNG Info" tab, sd-parsers and image viewers read it back.

- PNG (``.png``): lossless, the infotext in a ``parameters`` text chunk.
- JPEG (``.jpg``, ``.jpeg``) and WebP (``.webp``): quality 95, the infotext in the EXIF
  ``UserComment`` tag (0x9286, in the Exif IFD 0x8769), as A1111 writes it with
  ``piexif.helper.UserComment.dump(text, encoding="unicode")``: the 8-byte character
  code ``UNICODE\\0``, then the text in UTF-16 big-endian (EXIF 2.3, Table 9). The TIFF
  header is big-endian too, as piexif writes it, so readers that follow the byte order
  and readers that always decode big-endian (A1111, sd-parsers) agree.

The format follows the file name's suffix.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from ..errors import ConfigError
from .files import write_atomically

#: The PNG text chunk AUTOMATIC1111 reads generation parameters from.
INFOTEXT_KEY = "parameters"

#: Pillow's format for each file-name suffix sdgen writes.
FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}

#: The file-name suffixes sdgen writes, for checking names before any work starts.
IMAGE_SUFFIXES = tuple(FORMATS)

#: JPEG and WebP quality: 95 keeps a 512 px image's detail at about a fifth of the PNG.
QUALITY = 95

_EXIF_IFD = 0x8769
_USER_COMMENT = 0x9286
#: EXIF's character codes: the 8 bytes before the text of a UserComment.
_UNICODE, _ASCII, _UNDEFINED = b"UNICODE\0", b"ASCII\0\0\0", b"\0" * 8


def image_format(path: str | Path) -> str:
    """Pillow's format name for ``path``'s suffix (``PNG``, ``JPEG``, ``WEBP``); raises
    ``ConfigError`` for any other suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(
            f"{path}: sdgen writes {', '.join(IMAGE_SUFFIXES)} images, not {suffix or 'no suffix'}"
        )
    return FORMATS[suffix]


def image_bytes(pixels: np.ndarray, infotext: str, format: str = "PNG") -> bytes:
    """The file of ``pixels`` (H, W, 3 uint8) in ``format`` (``PNG``, ``JPEG`` or
    ``WEBP``) carrying ``infotext``: a ``parameters`` chunk in a PNG, the EXIF
    UserComment otherwise."""
    image = Image.fromarray(pixels)
    buffer = io.BytesIO()
    if format == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_text(INFOTEXT_KEY, infotext)
        image.save(buffer, format="PNG", pnginfo=info)
    elif format in ("JPEG", "WEBP"):
        image.save(buffer, format=format, quality=QUALITY, exif=_exif(infotext))
    else:
        raise ConfigError(f"sdgen writes PNG, JPEG and WEBP images, not {format}")
    return buffer.getvalue()


def save_image(path: Path, pixels: np.ndarray, infotext: str, overwrite: bool = False) -> str:
    """Save ``pixels`` with ``infotext`` atomically in the format of ``path``'s suffix;
    returns the file's sha256. Raises ``OutputExistsError`` if ``path`` exists and not
    ``overwrite``, ``ConfigError`` for a suffix sdgen does not write."""
    data = image_bytes(pixels, infotext, image_format(path))
    write_atomically(Path(path), data, overwrite)
    return hashlib.sha256(data).hexdigest()


def read_infotext(path: str | Path) -> str | None:
    """The infotext of an image file (PNG ``parameters`` chunk, or the EXIF UserComment
    of a JPEG or WebP, whatever the suffix says), or None if it has none."""
    with Image.open(path) as image:
        if image.format == "PNG":
            return image.text.get(INFOTEXT_KEY)
        comment = image.getexif().get_ifd(_EXIF_IFD).get(_USER_COMMENT)
    return None if comment is None else _user_comment_text(comment)


def _exif(infotext: str) -> Image.Exif:
    exif = Image.Exif()
    exif.endian = ">"  # big-endian ("MM"), as piexif writes it
    exif.get_ifd(_EXIF_IFD)[_USER_COMMENT] = _UNICODE + infotext.encode("utf-16-be")
    return exif


def _user_comment_text(comment: bytes | str) -> str | None:
    """A UserComment's text, decoded by its character code as A1111 reads it (through
    piexif): ``UNICODE`` is UTF-16 big-endian, ``ASCII`` ASCII, anything else UTF-8."""
    if isinstance(comment, str):  # Pillow gives a str where the tag was typed ASCII
        return comment
    code, text = comment[:8], comment[8:]
    if code == _UNICODE:
        return text.decode("utf-16-be", errors="replace")
    if code == _ASCII:
        return text.decode("ascii", errors="replace")
    if code == _UNDEFINED:
        return text.decode("utf-8", errors="ignore") or None
    return comment.decode("utf-8", errors="ignore") or None
