"""The model store: checkpoints imported with ``sdgen import`` (and ``--checkpoint``).

Each model is a folder ``$SDGEN_HOME/models/NAME/`` (default ``~/.local/share/sdgen``)
with keras_cv's weight files and a ``model.json`` describing it: architecture family,
prediction type, default size, the source file's sha256, and (schema 2) the networks
converted (``roles``: the three every run needs, and ``encoder``, the VAE encoder image
tasks need, for a checkpoint that has one). A model imported before schema 2 has no
``schema`` key and no encoder: it still generates from text, and an image task asks for
it to be imported again. A folder appears only when it is complete: conversion writes
beside it and renames it into place.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from . import __version__
from .errors import ConfigError, ModelError, OutputExistsError
from .output.files import apply_umask
from .paths import data_dir
from .registry import model_specs
from .spec import ModelSpec

METADATA = "model.json"
#: The ``schema`` written into each model.json: 2 records ``roles`` and converts the VAE
#: encoder; a model.json without ``schema`` is schema 1 (three networks, no encoder).
SCHEMA = 2
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def store_dir() -> Path:
    """``$SDGEN_HOME/models``, else ``$XDG_DATA_HOME/sdgen/models``, else
    ``~/.local/share/sdgen/models``."""
    return data_dir("models")


def check_name(name: str) -> str:
    """A valid new model name, or ``ConfigError`` saying why not."""
    if "/" in name or "\\" in name or os.sep in name or name in (".", ".."):
        raise ConfigError(f"model name {name!r} must not contain path separators")
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"model name {name!r} must be 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if name in model_specs():
        raise ConfigError(f"{name!r} is a built-in model; choose another name")
    return name


def imported_specs() -> dict[str, ModelSpec]:
    """Every complete imported model, by name (not the conversions of built-in models,
    see ``builtin_conversion``)."""
    folder = store_dir()
    if not folder.is_dir():
        return {}
    specs = {}
    for entry in sorted(folder.iterdir()):
        spec = imported_spec(entry.name)  # None for a built-in model's conversion
        if spec is not None:
            specs[entry.name] = spec
    return specs


def imported_spec(name: str) -> ModelSpec | None:
    """The spec of imported model ``name``, or None."""
    if not _NAME.fullmatch(name) or name in model_specs():
        return None
    info = _metadata(name)
    return None if info is None else spec_from_metadata(name, info, store_dir() / name)


def builtin_conversion(spec: ModelSpec) -> Path | None:
    """The store folder holding built-in ``spec``'s checkpoint converted (see
    :mod:`sdgen.provision`), or None while there is none of that very checkpoint."""
    info = _metadata(spec.name)
    if spec.checkpoint is None or info is None:
        return None
    if info.get("source_sha256") != spec.checkpoint.sha256:
        return None
    return store_dir() / spec.name


def _metadata(name: str) -> dict | None:
    try:
        return json.loads((store_dir() / name / METADATA).read_text("utf-8"))
    except (OSError, ValueError):
        return None


def stored_roles(folder: Path) -> tuple[str, ...] | None:
    """The networks the model.json in ``folder`` says were converted, or None where it
    does not say (schema 1, written before the VAE encoder was converted)."""
    try:
        roles = json.loads((Path(folder) / METADATA).read_text("utf-8")).get("roles")
    except (OSError, ValueError, AttributeError):
        return None
    return tuple(roles) if isinstance(roles, list) else None


def spec_from_metadata(name: str, info: dict, folder: Path) -> ModelSpec:
    return ModelSpec(
        name=name,
        family=info["family"],
        default_size=int(info["default_size"]),
        description=f"imported from {info.get('source', '?')}",
        prediction_type=info.get("prediction_type", "epsilon"),
        weights_dir=folder,
        source=info.get("source"),
        source_sha256=info.get("source_sha256"),
    )


def install(name: str, build, info: dict, overwrite: bool = False) -> Path:
    """Make ``store_dir()/name`` from ``build(folder)``, which writes the weight files into
    an empty temporary folder; ``info`` becomes its model.json. Nothing is left behind if
    ``build`` fails. Raises ``OutputExistsError`` if the name is taken and not
    ``overwrite``."""
    target = store_dir() / name
    if target.exists() and not overwrite:
        raise OutputExistsError(
            f"a model named {name!r} already exists in {store_dir()}; "
            "pass --overwrite to replace it or choose another --name"
        )
    store_dir().mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=store_dir()))
    try:
        build(staging)
        record = {
            **info,
            "name": name,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "sdgen_version": __version__,
        }
        (staging / METADATA).write_text(json.dumps(record, indent=2) + "\n", "utf-8")
        _apply_umask_to_tree(staging)
        if target.exists():
            old = target.with_name(f".{name}.old")
            os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _apply_umask_to_tree(folder: Path) -> None:
    """Give ``folder`` and everything in it the modes the umask asks for: ``mkdtemp``
    (here and in the converter) makes folders ``0700``, which would keep a shared store
    from the other users of a machine."""
    apply_umask(folder, is_dir=True)
    for root, folders, files in os.walk(folder):
        for name in folders:
            apply_umask(Path(root) / name, is_dir=True)
        for name in files:
            apply_umask(Path(root) / name, is_dir=False)


def source_sha256(path: Path) -> str:
    """sha256 of a checkpoint file, or of a diffusers folder's files (names and bytes);
    a file unchanged since sdgen last hashed it is not read again (``known_sha256``)."""
    import hashlib

    from .weights import known_sha256

    path = Path(path)
    if path.is_file():
        return known_sha256(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        digest.update(known_sha256(file).encode())
    return digest.hexdigest()


def import_checkpoint(
    path: str | Path,
    name: str,
    overwrite: bool = False,
    prediction_type: str | None = None,
    default_size: int | None = None,
    sha256: str | None = None,
) -> ModelSpec:
    """Convert the checkpoint at ``path`` (an original SD .safetensors/.ckpt file or a
    diffusers folder) into the store as ``name``; returns its spec.

    The architecture, prediction type and default size are detected from the checkpoint;
    ``prediction_type`` and ``default_size`` override what was detected.
    """
    from . import convert

    path = Path(path)
    check_name(name)
    if (store_dir() / name).exists() and not overwrite:
        raise OutputExistsError(
            f"a model named {name!r} already exists in {store_dir()}; "
            "pass --overwrite to replace it or choose another --name"
        )
    if not path.exists():
        raise convert.NotACheckpointError(f"checkpoint {path} does not exist")
    digest = sha256 or source_sha256(path)
    source = str(path.resolve())
    convert_into(name, path, source, digest, overwrite, prediction_type, default_size)
    return imported_spec(name)


def convert_into(
    name: str,
    path: Path,
    source: str,
    sha256: str,
    overwrite: bool = False,
    prediction_type: str | None = None,
    default_size: int | None = None,
    family: str | None = None,
) -> Path:
    """Convert the checkpoint at ``path`` into ``store_dir()/name`` (see ``install``),
    recording ``source`` and its ``sha256``; the folder. ``prediction_type`` and
    ``default_size`` override what was detected; ``family``, when given, is what the
    checkpoint must be (``ModelError`` otherwise, before anything is written)."""
    from . import convert

    converted = convert.convert_checkpoint(path, prediction_type=prediction_type)
    if family is not None and converted.family != family:
        raise ModelError(f"{path} is an {converted.family} checkpoint, but {name} is {family}")
    info = {
        "schema": SCHEMA,
        "roles": list(converted.roles),
        "family": converted.family,
        "prediction_type": prediction_type or converted.prediction_type,
        "default_size": default_size or converted.default_size,
        "source": source,
        "source_sha256": sha256,
    }
    return install(name, lambda folder: convert.save_converted(converted, folder), info, overwrite)


def checkpoint_model(path: str | Path) -> ModelSpec:
    """The model for ``--checkpoint PATH``: converted into the store on first use, under
    ``ckpt-`` and the start of the source's sha256, and reused after that."""
    digest = source_sha256(Path(path))
    name = f"ckpt-{digest[:12]}"
    spec = imported_spec(name)
    if spec is None:
        spec = import_checkpoint(path, name, overwrite=True, sha256=digest)
    return spec
