"""Writing results: PNGs with AUTOMATIC1111 infotext, the JSON Lines manifest, grids.

Every file is written to a temporary name in the same folder and renamed into place, so
an interrupted run never leaves a partial or corrupt file behind.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import math
import os
import re
import tempfile
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from .errors import OutputError, OutputExistsError

MANIFEST_NAME = "manifest.jsonl"
#: The PNG text chunk AUTOMATIC1111 reads generation parameters from.
INFOTEXT_KEY = "parameters"


def slugify(text: str, max_length: int = 48) -> str:
    """A file-name-safe slug of ``text``: lower-case ASCII letters, digits and dashes.

    Anything else, path separators and dots included, becomes a dash, so a slug can never
    leave the output folder. An empty result becomes ``image``.
    """
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    slug = slug[:max_length].rstrip("-")
    return slug or "image"


def format_infotext(parameters: dict) -> str:
    """Generation parameters in AUTOMATIC1111's infotext format.

    The prompt line, a ``Negative prompt:`` line when there is one, then
    ``Steps: 50, Sampler: DDIM, CFG scale: 7.5, Seed: 123, Size: 512x512, Model: ...,
    Version: sdgen 0.1.0``. ``parameters`` holds ``prompt``, ``negative_prompt``,
    ``steps``, ``sampler_label``, ``guidance_scale``, ``seed``, ``width``, ``height``,
    ``model`` and ``version``.
    """
    lines = [parameters["prompt"]]
    if parameters.get("negative_prompt"):
        lines.append(f"Negative prompt: {parameters['negative_prompt']}")
    fields = {
        "Steps": parameters["steps"],
        "Sampler": parameters["sampler_label"],
        "CFG scale": _number(parameters["guidance_scale"]),
        "Seed": parameters["seed"],
        "Size": f"{parameters['width']}x{parameters['height']}",
        "Model": parameters["model"],
        "Version": f"sdgen {parameters['version']}",
    }
    lines.append(", ".join(f"{key}: {value}" for key, value in fields.items()))
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
    for match in re.finditer(r"\s*([\w ]+):\s*([^,]+)(?:,|$)", settings_line):
        result[match.group(1).strip()] = match.group(2).strip()
    return result


def _number(value: float) -> str:
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


def write_atomically(path: Path, data: bytes, overwrite: bool = False) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename.

    Raises ``OutputExistsError`` if ``path`` exists and ``overwrite`` is false, and
    ``OutputError`` if the folder cannot be written.
    """
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; pass --overwrite to replace it")
    try:
        with _temporary_beside(path) as (handle, temporary):
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
            if overwrite:
                os.replace(temporary, path)
            else:
                _place_without_replacing(temporary, path)
    except FileExistsError as error:
        raise OutputExistsError(f"{path} already exists; pass --overwrite to replace it") from error
    except OSError as error:
        raise OutputError(f"cannot write {path}: {error.strerror or error}") from error


#: What ``link()`` raises where a filesystem has no hard links (gcsfuse, s3fs, SMB, FAT).
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK}


def _place_without_replacing(temporary: str, path: Path) -> None:
    """Move ``temporary`` to ``path`` unless ``path`` exists (``FileExistsError``).

    ``link()`` does that atomically: it fails instead of replacing a file that appeared
    meanwhile. Where the filesystem has no hard links, a rename after a last check is
    the best left; another writer would have to create the same name in between."""
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise
    except OSError as error:
        if error.errno not in _NO_HARD_LINKS:
            raise
        if path.exists():
            raise FileExistsError(errno.EEXIST, "File exists", str(path)) from error
        os.replace(temporary, path)


@contextlib.contextmanager
def _temporary_beside(path: Path) -> Iterator[tuple]:
    descriptor, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    handle = os.fdopen(descriptor, "wb")
    try:
        yield handle, name
    finally:
        handle.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def save_png(path: Path, pixels: np.ndarray, infotext: str, overwrite: bool = False) -> str:
    """Save an image with its infotext atomically; returns the file's sha256."""
    data = png_bytes(pixels, infotext)
    write_atomically(path, data, overwrite)
    return hashlib.sha256(data).hexdigest()


def append_manifest(folder: Path, record: dict) -> None:
    """Append ``record`` as one JSON line to ``folder/manifest.jsonl``.

    The line goes out in a single ``write`` on a file opened for appending and is synced,
    so concurrent or interrupted runs never leave a torn line.
    """
    line = (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
    path = folder / MANIFEST_NAME
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(descriptor).st_size
            if size and os.pread(descriptor, 1, size - 1) != b"\n":
                line = b"\n" + line  # close a line torn by a crash, never extend it
            os.write(descriptor, line)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    except OSError as error:
        raise OutputError(f"cannot write {path}: {error.strerror or error}") from error


def read_manifest(folder: Path) -> list[dict]:
    """Every record of ``folder/manifest.jsonl``, in order (empty if there is none).

    A line that is not a JSON object (a torn write from a machine that lost power) is
    skipped: its image is simply made again by a resumed run.
    """
    path = folder / MANIFEST_NAME
    if not path.exists():
        return []
    records = []
    for line in path.read_text("utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def grid_image(images: list[np.ndarray]) -> np.ndarray:
    """The images tiled in a near-square grid, row by row; unused cells are black.
    Images of different sizes are placed in cells as large as the largest."""
    columns = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    cell_h = max(image.shape[0] for image in images)
    cell_w = max(image.shape[1] for image in images)
    grid = np.zeros((rows * cell_h, columns * cell_w, 3), dtype=np.uint8)
    for position, image in enumerate(images):
        row, column = divmod(position, columns)
        top, left = row * cell_h, column * cell_w
        grid[top : top + image.shape[0], left : left + image.shape[1]] = image
    return grid


def ensure_writable_folder(folder: Path) -> None:
    """Create ``folder`` if needed; raise ``OutputError`` if files cannot be made in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise OutputError(
            f"cannot write to output folder {folder}: {error.strerror or error}"
        ) from error
