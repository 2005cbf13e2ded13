"""PNGs with AUTOMATIC1111 infotext: writing the ``parameters`` chunk and reading it back.

The infotext is the prompt line, a ``Negative prompt:`` line when there is one, then one
line of ``Key: value`` settings. Which settings go there is decided by the request's
identity (:mod:`sdgen.batch.identity`); this module only writes and parses the format.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from .files import write_atomically

#: The PNG text chunk AUTOMATIC1111 reads generation parameters from.
INFOTEXT_KEY = "parameters"


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
    for match in _SETTING.finditer(settings_line):
        value = match.group(2).strip()
        if value.startswith('"') and value.endswith('"') and len(value) > 1:
            try:  # a quoted value, which may hold commas: TI hashes: "a: 1f.., b: 2e.."
                value = json.loads(value)
            except json.JSONDecodeError:
                value = value[1:-1]
        result[match.group(1).strip()] = value
    return result


#: One ``Key: value`` setting: a key of words, spaces, dashes and slashes; a value that
#: is quoted (and may hold commas and escaped quotes) or runs to the next comma.
_SETTING = re.compile(r'\s*(\w[\w \-/]*):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')


def format_number(value: float) -> str:
    """A number as infotext writes it: ``7`` for a whole number, else ``7.5``."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def png_bytes(pixels: np.ndarray, infotext: str) -> bytes:
    """A PNG of ``pixels`` (H, W, 3 uint8) with ``infotext`` in its ``parameters`` chunk."""
    info = PngImagePlugin.PngInfo()
    info.add_text(INFOTEXT_KEY, infotext)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def read_infotext(path: str | Path) -> str | None:
    """The ``parameters`` text of a PNG, or None."""
    with Image.open(path) as image:
        return image.text.get(INFOTEXT_KEY)


def save_png(path: Path, pixels: np.ndarray, infotext: str, overwrite: bool = False) -> str:
    """Save an image with its infotext atomically; returns the file's sha256."""
    data = png_bytes(pixels, infotext)
    write_atomically(path, data, overwrite)
    return hashlib.sha256(data).hexdigest()
