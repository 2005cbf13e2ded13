"""Presets for ``--config``: TOML files of settings keyed like the CLI options, found by
name in the installed presets and a source checkout's ``configs/``, or given as a path."""

from __future__ import annotations

import tomllib
from pathlib import Path

from .errors import ConfigError

#: Folders searched for ``--config NAME``: the presets installed with the package, then
#: the ``configs/`` folder of a source checkout.
PRESET_DIRS = (Path(__file__).parent / "configs", Path(__file__).parent.parent / "configs")


def preset_names() -> list[str]:
    """Names of the presets that ``--config NAME`` finds."""
    names = set()
    for folder in PRESET_DIRS:
        if folder.is_dir():
            names.update(path.stem for path in folder.glob("*.toml"))
    return sorted(names)


def find_preset(name_or_path: str) -> Path:
    """The TOML file for ``--config``: an existing path, or a preset name."""
    path = Path(name_or_path).expanduser()
    if path.suffix == ".toml" or path.is_file():
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        return path
    for folder in PRESET_DIRS:
        candidate = folder / f"{name_or_path}.toml"
        if candidate.is_file():
            return candidate
    known = ", ".join(preset_names()) or "none"
    raise ConfigError(f"unknown preset {name_or_path!r}; presets: {known}; or give a .toml path")


def load_preset(name_or_path: str, allowed_keys: set[str]) -> dict:
    """The settings of a preset, keyed like the CLI options (``guidance_scale``, ...).

    Dashes in keys are accepted for underscores. A key that is not in ``allowed_keys``
    is an error, so a typo never goes unnoticed.
    """
    path = find_preset(name_or_path)
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"cannot read config {path}: {error}") from error
    settings = {key.replace("-", "_"): value for key, value in data.items()}
    unknown = sorted(set(settings) - allowed_keys)
    if unknown:
        raise ConfigError(
            f"unknown key(s) in {path}: {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(allowed_keys))}"
        )
    return settings


__all__ = ["PRESET_DIRS", "find_preset", "load_preset", "preset_names"]
