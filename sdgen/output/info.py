"""The generation parameters an image file holds, for ``sdgen info``: the infotext
(``parameters`` chunk or EXIF UserComment, as sdgen, AUTOMATIC1111 and
stable-diffusion.cpp write it) split into prompt, negative prompt and ordered settings."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ImageInfoError
from .png import parse_infotext, read_infotext

_INT = re.compile(r"-?(0|[1-9]\d*)")
_FLOAT = re.compile(r"-?(\d+\.\d*|\.\d+)([eE][-+]?\d+)?")


@dataclass(frozen=True)
class ImageParameters:
    """An image's prompt, negative prompt and ``Key: value`` settings in file order."""

    prompt: str
    negative_prompt: str
    settings: tuple[tuple[str, str], ...]

    def as_json(self) -> dict:
        """``{"prompt", "negative_prompt", "settings"}``, plain numbers parsed."""
        settings = {key: parse_value(value) for key, value in self.settings}
        return {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "settings": settings,
        }


def parse_value(value: str) -> int | float | str:
    """``value`` as an int or float when it is a plain number (``20``, ``7.5``), else
    itself: ``512x512``, a hash, or ``0123`` (a leading zero is not a plain number)."""
    if _INT.fullmatch(value):
        return int(value)
    if _FLOAT.fullmatch(value):
        return float(value)
    return value


def read_parameters(path: str | Path) -> ImageParameters:
    """The parameters of the image at ``path``; raises ``ImageInfoError`` when the file
    cannot be read as an image or holds no infotext."""
    try:
        text = read_infotext(path)
    except OSError as error:  # missing, a folder, not an image (UnidentifiedImageError)
        raise ImageInfoError(f"cannot read {path}: {error.strerror or error}") from None
    if not text or not text.strip():
        raise ImageInfoError(
            f"{path} holds no generation parameters (no 'parameters' PNG chunk or EXIF UserComment)"
        )
    return parameters_from_text(text)


def parameters_from_text(text: str) -> ImageParameters:
    """The parameters an infotext ``text`` holds (see ``read_parameters``)."""
    parsed = parse_infotext(text)
    prompt, negative = parsed.pop("prompt"), parsed.pop("negative_prompt")
    if not parsed:  # no settings line: parse_infotext took the last prompt line for one
        parsed = parse_infotext(text + "\n")
        prompt, negative = parsed.pop("prompt"), parsed.pop("negative_prompt")
    return ImageParameters(prompt, negative, tuple((k, str(v)) for k, v in parsed.items()))
