"""Have a model's three weight files on disk before it loads, and say what that costs.

Most models name their files (:func:`sdgen.weights.resolve_weights` finds or downloads
them). A built-in model published as one SD checkpoint (``sd-v1.5``) is downloaded once,
checked against its published sha256, converted into the model store (as ``sdgen import``
would) and the download deleted; later runs read the store. :func:`availability` tells
``sdgen models`` which models are present and how much a first run would download,
without hashing or downloading anything.

The VAE encoder, which only image tasks (img2img, inpainting) use, is provided apart
and only when such a task first needs it (:func:`provide_encoder`), so a text-to-image
run never downloads or converts it.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import MissingEncoderError
from .spec import ROLES, ModelSpec
from .store import builtin_conversion, convert_into, stored_roles
from .weights import (
    DEFAULT_FILENAMES,
    DownloadProgress,
    check_weights_dir,
    find_cached,
    resolve_file,
    resolve_weights,
)

#: What needs the VAE encoder, for its error messages.
_IMAGE_TASKS = "which image-to-image tasks need"


def provide_weights(
    spec: ModelSpec,
    weights_dir: Path | None = None,
    offline: bool = False,
    progress: DownloadProgress | None = None,
    say: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Local paths of ``spec``'s three weight files, by role (see the module docstring).

    ``weights_dir`` (``--weights DIR``) holds keras_cv-format files for any model, a
    checkpoint model too. Raises what ``resolve_weights`` raises, and ``ModelError``
    when a checkpoint turns out to be of another family than its model's.
    """
    if spec.checkpoint is None or weights_dir is not None:
        return resolve_weights(spec, weights_dir, offline, progress)
    folder = builtin_conversion(spec)
    if folder is None:
        folder = _convert_checkpoint(spec, offline, progress, say)
    return {role: folder / DEFAULT_FILENAMES[role] for role in ROLES}


def provide_encoder(
    spec: ModelSpec,
    weights_dir: Path | None = None,
    offline: bool = False,
    progress: DownloadProgress | None = None,
    say: Callable[[str], None] | None = None,
) -> Path | None:
    """The local path of ``spec``'s VAE encoder weights (``vae_encoder.h5``), for an image
    task; None for a generated model (``tiny``: its encoder is filled from its seed).

    From ``weights_dir`` (``--weights DIR``) or an imported model's folder as they are;
    a published file (keras_cv's ``vae_encoder.h5``) from the caches or downloaded; a
    built-in checkpoint model's from its conversion, which is made again (download
    included) if it predates the encoder. Raises ``MissingEncoderError`` (exit 2) for a
    folder without the file, saying how to get it (for an imported model: import it
    again), and what ``resolve_weights`` raises for a download.
    """
    filename = DEFAULT_FILENAMES["encoder"]
    if weights_dir is not None:
        check_weights_dir(weights_dir)
        path = Path(weights_dir) / filename
        if path.is_file():
            return path
        published = spec.file_for("encoder")
        where = f" (download it from {published.url})" if published else ""
        raise MissingEncoderError(
            f"--weights {weights_dir} has no {filename}, the VAE encoder {_IMAGE_TASKS}; "
            f"put it there{where}"
        )
    if spec.weights_dir is not None:  # an imported model
        path = Path(spec.weights_dir) / filename
        if path.is_file():
            return path
        raise MissingEncoderError(_imported_without_encoder(spec))
    if spec.checkpoint is not None:
        folder = builtin_conversion(spec)
        if folder is None or not (folder / filename).is_file():
            if folder is not None and say is not None:
                say(f"{spec.name}'s conversion predates its VAE encoder: converting it again")
            folder = _convert_checkpoint(spec, offline, progress, say)
        if not (folder / filename).is_file():
            raise MissingEncoderError(
                f"{spec.name}'s checkpoint has no VAE encoder, the network {_IMAGE_TASKS}"
            )
        return folder / filename
    weight = spec.file_for("encoder")
    if weight is not None:
        return resolve_file(spec, weight, None, offline, progress)
    if spec.generated:
        return None
    raise MissingEncoderError(f"model {spec.name} has no VAE encoder, the network {_IMAGE_TASKS}")


def _imported_without_encoder(spec: ModelSpec) -> str:
    """Why imported ``spec`` has no encoder, and the way out, in one line."""
    roles = stored_roles(spec.weights_dir)
    if roles is not None and "encoder" not in roles:  # converted knowing encoders: none
        return (
            f"model {spec.name} has no VAE encoder, the network {_IMAGE_TASKS}: its "
            f"checkpoint {spec.source or '?'} holds none"
        )
    command = (
        f"sdgen import {shlex.quote(spec.source or 'CHECKPOINT')} --name {spec.name} "
        f"--overwrite --prediction-type {spec.prediction_type} --size {spec.default_size}"
    )
    return (
        f"model {spec.name} has no VAE encoder, the network {_IMAGE_TASKS} (imported by an "
        f"sdgen that did not convert encoders, or its file is gone); import it again: {command}"
    )


def _convert_checkpoint(spec, offline, progress, say) -> Path:
    """Download (or find in the cache) ``spec``'s checkpoint, convert it into the store
    and delete the download; the store folder."""
    checkpoint = spec.checkpoint
    source = resolve_file(spec, checkpoint, None, offline, progress)
    if say is not None:
        say(f"converting {source.name} into the model store (once) ...")
    began = time.perf_counter()
    folder = convert_into(
        spec.name,
        source,
        checkpoint.url,
        checkpoint.sha256,
        overwrite=True,
        prediction_type=spec.prediction_type,
        default_size=spec.default_size,
        family=spec.family,
    )
    source.unlink(missing_ok=True)  # the store holds it now; 4 GB are not kept twice
    if say is not None:
        say(f"converted {spec.name} in {time.perf_counter() - began:.0f} s, into {folder}")
    return folder


@dataclass(frozen=True)
class Availability:
    """Whether a model can load without the network, and what its first run downloads.

    state: ``generated`` (no files), ``present``, ``partial`` or ``download``;
    download_bytes: what is still to download, as published (None: unknown);
    converts: whether the first run converts a checkpoint into the store.
    """

    state: str
    download_bytes: int | None = 0
    converts: bool = False

    def describe(self) -> str:
        """``present``, ``download 4.3 GB, then convert``, ``convert``, ..."""
        if self.state in ("generated", "present"):
            return self.state
        steps = []
        if self.download_bytes is None:
            steps.append("download")
        elif self.download_bytes:
            steps.append(f"download {self.download_bytes / 1e9:.1f} GB")
        if self.converts:
            steps.append("convert")
        return ", then ".join(steps)


def availability(spec: ModelSpec) -> Availability:
    """What ``spec`` needs before its first image (see ``Availability``); only looks
    at which files exist."""
    if spec.generated:
        return Availability("generated")
    if spec.weights_dir is not None:  # imported: complete by construction
        return Availability("present")
    if spec.checkpoint is not None:
        if builtin_conversion(spec) is not None:
            return Availability("present")
        cached = find_cached(spec, spec.checkpoint, verify=False) is not None
        size = 0 if cached else spec.checkpoint.size
        return Availability("partial" if cached else "download", size, converts=True)
    missing = [w for w in spec.files if find_cached(spec, w, verify=False) is None]
    if not missing:
        return Availability("present")
    sizes = [w.size for w in missing]
    total = None if None in sizes else sum(sizes)
    return Availability("partial" if len(missing) < len(spec.files) else "download", total)
