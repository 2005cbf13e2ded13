"""Files that appear whole or not at all: atomic writes, link-or-rename, folder checks.

Every file is written to a temporary name in the same folder and moved into place, so an
interrupted run never leaves a partial or corrupt file behind. Also the file-name-safe
slugs that output names are made of.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
import unicodedata
from collections.abc import Iterator
from pathlib import Path

from ..errors import OutputError, OutputExistsError


def slugify(text: str, max_length: int = 48) -> str:
    """A file-name-safe slug of ``text``: lower-case ASCII letters, digits and dashes.

    Anything else, path separators and dots included, becomes a dash, so a slug can never
    leave the output folder. An empty result becomes ``image``.
    """
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    slug = slug[:max_length].rstrip("-")
    return slug or "image"


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


def remove_temporaries(folder: Path, names: set[str]) -> int:
    """Delete the temporaries that ``write_atomically`` left beside any of ``names`` in
    ``folder`` when a writer was killed mid-write; returns how many. One listing of the
    folder, whatever the number of names. Only for files no live process is writing."""
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        name = entry.name
        if not (name.startswith(".") and name.endswith(".tmp")):
            continue
        target = name[1 : -len(".tmp")].rpartition(".")[0]  # .NAME.RANDOM.tmp -> NAME
        if target in names:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed += 1
    return removed


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
