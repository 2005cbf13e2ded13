"""Where sdgen keeps what users add: the folders below sdgen's data home.

``$SDGEN_HOME``, else ``$XDG_DATA_HOME/sdgen``, else ``~/.local/share/sdgen`` holds
``models`` (the model store), ``loras``, ``embeddings`` and ``wildcards``. A leaf
module: it imports nothing of sdgen's.
"""

from __future__ import annotations

import os
from pathlib import Path


def data_home() -> Path:
    """``$SDGEN_HOME``, else ``$XDG_DATA_HOME/sdgen``, else ``~/.local/share/sdgen``."""
    if os.environ.get("SDGEN_HOME"):
        return Path(os.environ["SDGEN_HOME"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base).expanduser() / "sdgen"


def data_dir(kind: str) -> Path:
    """The folder of one kind of thing below :func:`data_home`: ``models``, ``loras``,
    ``embeddings`` or ``wildcards``."""
    return data_home() / kind


__all__ = ["data_dir", "data_home"]
