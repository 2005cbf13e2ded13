"""AUTOMATIC1111 infotext: the text of an image's generation parameters, written and
parsed back.

The infotext is the prompt line, a ``Negative prompt:`` line when there is one, then one
line of ``Key: value`` settings. Which settings go there is decided by the request's
identity (:mod:`sdgen.batch.identity`); this module only writes and parses the text.
Where an image file carries it (PNG chunk, EXIF UserComment) is :mod:`.formats`'s job;
``save_png``, ``png_bytes`` and ``read_infotext`` stay here for their callers and handle
every format sdgen writes.
"""

from __future__ import annotations

import json
import re

import numpy as np

from .formats import INFOTEXT_KEY, image_bytes, read_infotext, save_image

__all__ = [
    "INFOTEXT_KEY",
    "format_infotext",
    "format_number",
    "parse_infotext",
    "png_bytes",
    "read_infotext",
    "save_image",
    "save_png",
]


def format_infotext(prompt: str, negative_prompt: str, settings: dict[str, object]) -> str:
    """Infotext in AUTOMATIC1111's format: ``prompt``, a ``Negative prompt:`` line when
    ``negative_prompt`` is not empty, then ``settings`` as ``Key: value, Key: value``
    in the order given (e.g. ``Steps: 50, Sampler: DDIM, CFG scale: 7.5, ...``)."""
    lines = [prompt]
    if negative_prompt:
        lines.append(f"Negative prompt: {negative_prompt}")
    lines.append(", ".join(f"{key}: {value}" for key, value in settings.items()))
    return "\n".join(lines)


def parse_infotext(text: str) -> dict:
    """Read infotext back: ``{"prompt", "negative_prompt", and each "Key": "value"}``."""
    lines = text.split("\n")
    settings_line = lines[-1]
    prompt_lines, negative = [], ""
    for line in lines[:-1]:
        if line.startswith("Negative prompt: "):
            negative = line[len("Negative prompt: ") :]
        elif negative:
            negative += "\n" + line
        else:
            prompt_lines.append(line)
    result = {"prompt": "\n".join(prompt_lines), "negative_prompt": negative}
    position = 0
    while (match := _SETTING.search(settings_line, position)) is not None:
        position = match.end()
        value = match.group(2).strip()
        if value[:1] in ("{", "["):
            try:  # unquoted JSON, commas and all: stable-diffusion.cpp's SDCPP: {...}
                _, end = _JSON.raw_decode(settings_line, match.start(2))
                value, position = settings_line[match.start(2) : end], end
            except json.JSONDecodeError:
                pass
        elif value.startswith('"') and value.endswith('"') and len(value) > 1:
            try:  # a quoted value, which may hold commas: TI hashes: "a: 1f.., b: 2e.."
                value = json.loads(value)
            except json.JSONDecodeError:
                value = value[1:-1]
        result[match.group(1).strip()] = value
    return result


_JSON = json.JSONDecoder()


#: One ``Key: value`` setting: a key of words, spaces, dashes and slashes; a value that
#: is quoted (and may hold commas and escaped quotes) or runs to the next comma.
_SETTING = re.compile(r'\s*(\w[\w \-/]*):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')


def format_number(value: float) -> str:
    """A number as infotext writes it: ``7`` for a whole number, else ``7.5``."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def png_bytes(pixels: np.ndarray, infotext: str) -> bytes:
    """A PNG of ``pixels`` (H, W, 3 uint8) with ``infotext`` in its ``parameters`` chunk."""
    return image_bytes(pixels, infotext, "PNG")


#: Save an image with its infotext atomically, in the format of the path's suffix
#: (``.png``, ``.jpg``, ``.jpeg``, ``.webp``); returns the file's sha256. The name it had
#: when sdgen wrote only PNGs.
save_png = save_image
