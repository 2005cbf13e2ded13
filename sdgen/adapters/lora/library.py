"""A folder of LoRA files, by name, as ``<lora:NAME:…>`` and ``--lora NAME`` ask for them."""

from __future__ import annotations

import os
from pathlib import Path

from ...paths import data_dir
from ..folders import adapter_files
from .errors import LoraError
from .files import SUFFIXES, LoraFile, read_lora


def default_loras_dir() -> Path:
    """``$SDGEN_HOME/loras``, else ``$XDG_DATA_HOME/sdgen/loras``, else
    ``~/.local/share/sdgen/loras`` (beside ``embeddings`` and the model store)."""
    return data_dir("loras")


class LoraLibrary:
    """The LoRAs of one folder (default :func:`default_loras_dir`) and its subfolders.

    Names are file stems, matched in any case; of two files with one stem the one first in
    the order of :data:`SUFFIXES`, then of their paths, wins. The folder is scanned at
    each lookup (it is small, and files may be added between the lines of a prompts
    file); files are read by :meth:`load`, once per path, modification time and size.
    """

    def __init__(self, folder: Path | None = None):
        self.folder = Path(folder) if folder is not None else default_loras_dir()
        self._loaded: dict[tuple[str, int, int], LoraFile] = {}

    def _paths(self) -> dict[str, Path]:
        """Each name (by its lowercase) -> its file."""
        files = adapter_files(self.folder, SUFFIXES)
        files.sort(
            key=lambda f: (SUFFIXES.index(f.suffix.lower()), f.relative_to(self.folder).parts)
        )
        paths: dict[str, Path] = {}
        for file in files:
            paths.setdefault(file.stem.lower(), file)
        return paths

    def names(self) -> list[str]:
        """The LoRAs' names (file stems), sorted case-insensitively."""
        return sorted((p.stem for p in self._paths().values()), key=lambda n: (n.lower(), n))

    def resolve(self, name_or_path: str | os.PathLike) -> Path:
        """The file of ``name_or_path``: a path to an existing file as it is, a path below
        the folder (with or without its suffix), else a name (a stem, with or without one
        of :data:`SUFFIXES`) looked up in the folder and its subfolders.

        Raises :class:`LoraError` saying where it looked when there is none.
        """
        given = Path(name_or_path).expanduser()
        if given.is_file():
            return given
        for suffix in ("", *SUFFIXES):  # a path below the folder: chars/hero
            below = self.folder / f"{name_or_path}{suffix}"
            if not given.is_absolute() and below.is_file() and below.suffix.lower() in SUFFIXES:
                return below
        name = str(name_or_path)
        stem = name[: -len(given.suffix)] if given.suffix.lower() in SUFFIXES else name
        found = self._paths().get(stem.lower())
        if found is not None and (
            given.suffix.lower() not in SUFFIXES or found.suffix.lower() == given.suffix.lower()
        ):
            return found
        where = "" if self.folder.is_dir() else ", which does not exist"
        raise LoraError(
            f"no LoRA named {name!r}: looked for {stem}{{{','.join(SUFFIXES)}}} in "
            f"{self.folder} and its subfolders{where}"
        )

    def load(self, name_or_path: str | os.PathLike) -> LoraFile:
        """The LoRA :meth:`resolve` finds, read with :func:`read_lora` once per file
        (path, modification time and size), then kept."""
        path = self.resolve(name_or_path)
        try:
            stat = path.stat()
        except OSError as error:
            raise LoraError(f"could not read LoRA {path}: {error.strerror or error}") from error
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        if key not in self._loaded:
            self._loaded[key] = read_lora(path)
        return self._loaded[key]

    def describe(self) -> list[dict]:
        """For ``sdgen models``: per name, ``name``, ``path``, ``format``, ``family``,
        ``rank``, ``sha256`` and ``error``; a file that cannot be used has its message in
        ``error`` and None in the fields read from it. Never raises for one file."""
        rows = []
        for path in self._paths().values():
            row = {"name": path.stem, "path": str(path), "format": None, "family": None}
            row.update(rank=None, sha256=None, error=None)
            try:
                lora = self.load(path)
            except LoraError as error:
                row["error"] = str(error)
            except Exception as error:  # a damaged file must not stop the listing
                row["error"] = f"could not read LoRA {path}: {error}"
            else:
                row.update(
                    format=lora.format, family=lora.family, rank=lora.rank, sha256=lora.sha256
                )
            rows.append(row)
        return sorted(rows, key=lambda row: (row["name"].lower(), row["name"]))
