"""Finding adapter files in a folder tree, as both adapter libraries (LoRAs and
textual-inversion embeddings) do: subfolders followed (symlinks too, loops cut),
hidden files and folders (``.name``) skipped, only the given suffixes taken."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def adapter_files(folder: Path, suffixes: Iterable[str], skip_empty: bool = False) -> list[Path]:
    """Every regular file below ``folder`` whose lowercase suffix is one of ``suffixes``,
    in walk order; ``skip_empty`` leaves out empty files (A1111 skips empty embeddings).
    A missing folder has none."""
    suffixes = tuple(suffixes)
    files = []
    seen = set()
    for root, folders, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a symlink loop
            folders.clear()
            continue
        seen.add(real)
        folders[:] = [name for name in folders if not name.startswith(".")]
        for name in names:
            file = Path(root, name)
            if name.startswith(".") or file.suffix.lower() not in suffixes:
                continue
            try:
                if not file.is_file() or (skip_empty and file.stat().st_size == 0):
                    continue
            except OSError:
                continue
            files.append(file)
    return files


__all__ = ["adapter_files"]
