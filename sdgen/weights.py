"""Resolve, download, verify and cache weight files. The only module that uses the network.

Where a model's file is looked for, in order:

1. ``weights_dir`` (``--weights DIR``), under the file name keras_cv publishes;
2. sdgen's cache, ``$SDGEN_CACHE/weights/MODEL/`` (default ``~/.cache/sdgen``);
3. the Keras cache that ``keras.utils.get_file`` fills when keras_cv downloads the same
   files itself, ``$KERAS_HOME/datasets/`` and ``~/.keras/datasets/``;
4. otherwise the file is downloaded from its published URL (or from
   ``$SDGEN_WEIGHTS_MIRROR/FILENAME``) into sdgen's cache, unless ``offline``.

Files from the caches and from downloads must match the published sha256; a mismatch is
refused and never cached. A verified cached file is recorded with its size and mtime, so
the next run does not hash gigabytes again. Files in ``weights_dir`` are the user's own
and are taken as they are.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from .errors import ChecksumError, WeightsError
from .spec import ROLES, ModelSpec, WeightFile

_CHUNK = 1 << 20
#: The file names keras_cv publishes, used for ``--weights DIR`` with any model.
DEFAULT_FILENAMES = {
    "text_encoder": "kcv_encoder.h5",
    "diffusion_model": "kcv_diffusion_model.h5",
    "decoder": "kcv_decoder.h5",
}
#: Called as ``progress(filename, bytes_done, bytes_total_or_None)`` while downloading.
DownloadProgress = Callable[[str, int, int | None], None]


def cache_dir() -> Path:
    """sdgen's cache folder: ``$SDGEN_CACHE``, else ``$XDG_CACHE_HOME/sdgen``, else
    ``~/.cache/sdgen``."""
    if os.environ.get("SDGEN_CACHE"):
        return Path(os.environ["SDGEN_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "sdgen"


def keras_cache_dirs() -> list[Path]:
    """The folders where ``keras.utils.get_file`` keeps keras_cv's downloads."""
    dirs = []
    if os.environ.get("KERAS_HOME"):
        dirs.append(Path(os.environ["KERAS_HOME"]).expanduser() / "datasets")
    dirs.append(Path.home() / ".keras" / "datasets")
    return dirs


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_weights(
    spec: ModelSpec,
    weights_dir: Path | None = None,
    offline: bool = False,
    progress: DownloadProgress | None = None,
) -> dict[str, Path]:
    """Local paths of every weight file of ``spec``, by role, downloading what is missing.

    Raises ``WeightsError`` when a file is missing (offline, or the download fails) and
    ``ChecksumError`` when a cached or downloaded file has the wrong sha256.
    """
    if weights_dir is None and spec.weights_dir is not None:
        weights_dir = spec.weights_dir  # an imported model's own folder
    paths = {}
    for role in ROLES:
        weight = spec.file_for(role)
        if weight is None and weights_dir is not None:
            # a model with generated weights (tiny) can still be given files to load
            weight = WeightFile(role, DEFAULT_FILENAMES[role], url="", sha256="")
        if weight is not None:
            paths[role] = resolve_file(spec, weight, weights_dir, offline, progress)
    return paths


def resolve_file(
    spec: ModelSpec,
    weight: WeightFile,
    weights_dir: Path | None = None,
    offline: bool = False,
    progress: DownloadProgress | None = None,
) -> Path:
    """The local path of one weight file; see :func:`resolve_weights`."""
    if weights_dir is not None:
        candidate = Path(weights_dir) / weight.filename
        if not candidate.is_file():
            raise WeightsError(
                f"weights file {weight.filename} is not in {weights_dir} (from --weights)"
                + (f"; download it from {weight.url} into that folder" if weight.url else "")
            )
        return candidate

    looked = []
    cached = cache_dir() / "weights" / spec.name / weight.filename
    for candidate in [cached] + [d / weight.filename for d in keras_cache_dirs()]:
        looked.append(candidate)
        if candidate.is_file():
            _check_cached(candidate, weight)
            return candidate

    if offline:
        places = ", ".join(str(p) for p in looked)
        raise WeightsError(
            f"weights file {weight.filename} not found and --offline is set; looked in: "
            f"{places}. Download it from {weight.url} and pass its folder with --weights DIR"
        )
    url = mirror_url(weight)
    try:
        download(url, weight.sha256, cached, progress)
    except ChecksumError:
        raise
    except WeightsError as error:
        raise WeightsError(
            f"{error}; to provide it yourself, put {weight.filename} in a folder and pass "
            f"--weights DIR, or place it at {cached}"
        ) from error
    return cached


def mirror_url(weight: WeightFile) -> str:
    """The URL to download ``weight`` from: ``$SDGEN_WEIGHTS_MIRROR/FILENAME`` when the
    mirror is set (a local or company mirror of the published files), else its own URL."""
    mirror = os.environ.get("SDGEN_WEIGHTS_MIRROR")
    if mirror:
        return mirror.rstrip("/") + "/" + weight.filename
    return weight.url


def download(
    url: str, sha256: str, destination: Path, progress: DownloadProgress | None = None
) -> None:
    """Download ``url`` to ``destination`` if and only if its content hashes to ``sha256``.

    The file is streamed into a temporary file beside ``destination`` while being hashed,
    and renamed into place only after the hash matches, so an interrupted or corrupt
    download never appears in the cache.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{destination.name}.", suffix=".part", dir=destination.parent
    )
    temporary = Path(temporary)
    digest = hashlib.sha256()
    try:
        with os.fdopen(handle, "wb") as out:
            try:
                response = urllib.request.urlopen(url, timeout=60)
            except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
                reason = str(getattr(error, "reason", None) or error).strip()
                reason = " ".join(reason.split())  # keep the message on one line
                raise WeightsError(f"could not download {url}: {reason}") from error
            with response:
                total = response.headers.get("Content-Length")
                total = int(total) if total and total.isdigit() else None
                done = 0
                while True:
                    try:
                        chunk = response.read(_CHUNK)
                    except (OSError, http.client.HTTPException) as error:
                        raise WeightsError(f"download of {url} failed: {error!r}") from error
                    if not chunk:
                        break
                    out.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(destination.name, done, total)
            if total is not None and done != total:
                raise WeightsError(f"download of {url} stopped after {done} of {total} bytes")
        actual = digest.hexdigest()
        if actual != sha256:
            raise ChecksumError(
                f"refusing {url}: its sha256 is {actual}, expected {sha256}; "
                "the file was not cached"
            )
        os.replace(temporary, destination)
        _record_verified(destination, sha256)
    finally:
        temporary.unlink(missing_ok=True)


def _stamp_path(path: Path) -> Path:
    return cache_dir() / "verified" / (hashlib.sha256(str(path.resolve()).encode()).hexdigest())


def _record_verified(path: Path, sha256: str, stat: os.stat_result | None = None) -> None:
    stat = stat or path.stat()
    stamp = _stamp_path(path)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    record = {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    stamp.write_text(json.dumps({**record, "sha256": sha256}))


def known_sha256(path: Path) -> str:
    """The sha256 of the file at ``path``, hashed only if its size or modification time
    changed since sdgen last hashed it (the stamps under ``cache_dir()/verified``), so a
    multi-GB checkpoint is read once, not on every run (A1111 caches its hashes the same
    way)."""
    stat = path.stat()
    try:
        stamp = json.loads(_stamp_path(path).read_text())
        if (stamp["size"], stamp["mtime_ns"]) == (stat.st_size, stat.st_mtime_ns):
            return stamp["sha256"]
    except (OSError, ValueError, KeyError):
        pass
    digest = sha256_of(path)
    # a read-only cache still works, the file is just hashed again next time
    with contextlib.suppress(OSError):
        _record_verified(path, digest, stat)
    return digest


def _check_cached(path: Path, weight: WeightFile) -> None:
    """Raise ``ChecksumError`` unless the cached ``path`` holds ``weight``; hashes it only
    if it changed since the last check, so a wrong file is never used."""
    actual = known_sha256(path)
    if actual != weight.sha256:
        raise ChecksumError(
            f"cached file {path} has sha256 {actual}, expected {weight.sha256}; "
            "delete it so sdgen can download it again"
        )
