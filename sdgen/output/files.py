"""Files that appear whole or not at all: atomic writes, link-or-rename, folder checks.

Every file is written to a temporary name in the same folder and moved into place, so an
interrupted run never leaves a partial or corrupt file behind. The file placed gets the
mode a plain ``open()`` would have given it (``0666`` less the umask), not the ``0600``
of the temporary. Also the file-name-safe slugs that output names are made of.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
import threading
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


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows.

    Linux (4.7 and later) reports it in ``/proc/self/status``; elsewhere it is read the
    only portable way, by setting a new one and restoring it. While it is swapped, a
    file another thread creates gets the stricter ``0o077``, never a looser mode, and
    ``_UMASK_LOCK`` keeps sdgen's own callers from reading the swapped value.
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        umask = os.umask(0o077)
        os.umask(umask)
    return umask


_UMASK_LOCK = threading.Lock()


def default_mode(is_dir: bool = False) -> int:
    """The mode ``open()`` (``0o666``) or ``mkdir()`` (``0o777``) would give a new file or
    folder under the current umask: ``0o644`` / ``0o755`` with umask ``022``."""
    return (0o777 if is_dir else 0o666) & ~current_umask()


def apply_umask(path: str | Path, is_dir: bool | None = None) -> None:
    """Give ``path`` the mode a plain ``open()`` or ``mkdir()`` would have (see
    ``default_mode``): for what was made through ``tempfile.mkstemp`` (``0600``) or
    ``mkdtemp`` (``0700``) and then renamed into place. ``is_dir`` defaults to what
    ``path`` is. Where the filesystem keeps no modes, or ``path`` belongs to another
    user, it is left as it is. The model store and the weights cache call it."""
    path = Path(path)
    if is_dir is None:
        is_dir = path.is_dir()
    _chmod(path, default_mode(is_dir))


#: What ``chmod()`` raises where a filesystem keeps no modes (gcsfuse, s3fs, SMB, FAT)
#: or the file belongs to someone else: the mode stays as it is, the write goes on.
_NO_MODES = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EROFS}


def _chmod(path: str | Path, mode: int) -> None:
    try:
        os.chmod(path, mode)
    except OSError as error:
        if error.errno not in _NO_MODES:
            raise


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
            _chmod(temporary, default_mode())  # mkstemp made it 0600
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


@contextlib.contextmanager
def no_empty_folder_left(folder: Path):
    """Remove the output folder (and the parents made with it) if this run created it
    and leaves it empty: interrupted before the first image, or nothing made."""
    created = []
    missing = Path(os.path.abspath(folder))
    while not missing.exists() and missing != missing.parent:
        created.append(missing)
        missing = missing.parent
    try:
        yield
    finally:
        for path in created:  # the deepest first; stop at one that holds something
            try:
                path.rmdir()
            except FileNotFoundError:
                continue
            except OSError:
                break
