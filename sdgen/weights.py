"""Resolve, download, verify and cache weight files. The only module that uses the network.

Where a model's file is looked for, in order:

1. ``weights_dir`` (``--weights DIR``), under the file name keras_cv publishes;
2. sdgen's cache, ``$SDGEN_CACHE/weights/MODEL/`` (default ``~/.cache/sdgen``);
3. the Keras cache that ``keras.utils.get_file`` fills when keras_cv downloads the same
   files itself, ``$KERAS_HOME/datasets/`` and ``~/.keras/datasets/``;
4. otherwise the file is downloaded from its published URL (or from
   ``$SDGEN_WEIGHTS_MIRROR/FILENAME``) into sdgen's cache, unless ``offline``.

1 stops at a folder; a model whose files are missing gets one error naming all of them,
every folder looked in and the ways out (``--weights DIR``, ``$SDGEN_WEIGHTS_MIRROR``,
``--model tiny``), not one error per file.

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

from .errors import ChecksumError, UsageError, WeightsError
from .output.files import apply_umask
from .spec import ROLES, ModelSpec, WeightFile

_CHUNK = 1 << 20
#: The file names keras_cv publishes, used for ``--weights DIR`` with any model (the VAE
#: encoder's, ``vae_encoder.h5``, is looked for only when an image task needs it).
DEFAULT_FILENAMES = {
    "text_encoder": "kcv_encoder.h5",
    "diffusion_model": "kcv_diffusion_model.h5",
    "decoder": "kcv_decoder.h5",
    "encoder": "vae_encoder.h5",
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


def check_weights_dir(folder: Path) -> None:
    """Raise ``UsageError`` unless ``folder`` (``--weights DIR``) is an existing folder,
    so a mistyped path is refused before any work instead of reported as missing files."""
    if not folder.exists():
        raise UsageError(f"--weights {folder}: the folder does not exist")
    if not folder.is_dir():
        raise UsageError(f"--weights {folder} is not a folder")


def resolve_weights(
    spec: ModelSpec,
    weights_dir: Path | None = None,
    offline: bool = False,
    progress: DownloadProgress | None = None,
) -> dict[str, Path]:
    """Local paths of the weight files of ``spec``'s ``ROLES`` (every run's networks;
    not the VAE encoder, see :func:`sdgen.provision.provide_encoder`), by role,
    downloading what is missing.

    Raises ``UsageError`` when ``weights_dir`` is not a folder; ``WeightsError`` when
    files are missing (offline, or a download failed), naming every missing file, every
    folder looked in and the ways out; ``ChecksumError`` when a cached or downloaded
    file has the wrong sha256.
    """
    folder = weights_dir if weights_dir is not None else spec.weights_dir
    wanted = {}
    for role in ROLES:
        weight = spec.file_for(role)
        if weight is None and folder is not None:
            # a model with generated weights (tiny) can still be given files to load
            weight = WeightFile(role, DEFAULT_FILENAMES[role], url="", sha256="")
        if weight is not None:
            wanted[role] = weight
    return _resolve(spec, wanted, weights_dir, offline, progress)


def resolve_file(
    spec: ModelSpec,
    weight: WeightFile,
    weights_dir: Path | None = None,
    offline: bool = False,
    progress: DownloadProgress | None = None,
) -> Path:
    """The local path of one weight file; see :func:`resolve_weights`."""
    return _resolve(spec, {weight.role: weight}, weights_dir, offline, progress)[weight.role]


def _resolve(
    spec: ModelSpec,
    wanted: dict[str, WeightFile],
    weights_dir: Path | None,
    offline: bool,
    progress: DownloadProgress | None,
) -> dict[str, Path]:
    if weights_dir is not None or spec.weights_dir is not None:
        return _from_folder(spec, wanted, weights_dir)
    paths, missing = {}, {}
    for role, weight in wanted.items():
        found = find_cached(spec, weight)
        if found is None:
            missing[role] = weight
        else:
            paths[role] = found
    if missing and offline:
        raise _missing_error(spec, list(missing.values()), None)
    for number, (role, weight) in enumerate(missing.items()):
        destination = cache_dir() / "weights" / spec.name / weight.filename
        try:
            download(mirror_url(weight), weight.sha256, destination, progress)
        except ChecksumError:
            raise
        except WeightsError as error:  # this file and every one not tried yet
            raise _missing_error(spec, list(missing.values())[number:], str(error)) from error
        paths[role] = destination
    return {role: paths[role] for role in wanted}


def _from_folder(
    spec: ModelSpec, wanted: dict[str, WeightFile], weights_dir: Path | None
) -> dict[str, Path]:
    """The files of ``wanted`` in ``weights_dir`` (``--weights``) or, without it, in the
    folder of an imported model, taken as they are: they are the user's own."""
    folder = Path(weights_dir if weights_dir is not None else spec.weights_dir)
    where = "from --weights" if weights_dir is not None else f"the folder of model {spec.name}"
    if weights_dir is not None:
        check_weights_dir(folder)
    missing = [w for w in wanted.values() if not (folder / w.filename).is_file()]
    if missing:
        names = ", ".join(w.filename for w in missing)
        noun = "weights file" if len(missing) == 1 else f"{len(missing)} weights files"
        source = _published_at(missing)
        them = "it" if len(missing) == 1 else "them"
        raise WeightsError(
            f"{noun} {names} {'is' if len(missing) == 1 else 'are'} not in {folder} "
            f"({where})" + (f"; download {them} from {source} into that folder" if source else "")
        )
    return {role: folder / weight.filename for role, weight in wanted.items()}


def find_cached(spec: ModelSpec, weight: WeightFile, verify: bool = True) -> Path | None:
    """``weight`` in sdgen's or Keras's cache, or None; with ``verify``, a wrong file
    there raises ``ChecksumError``. A file another built-in model publishes too (SD's
    decoder) is found in that model's cache folder as well, so it is downloaded once."""
    from .registry import model_specs

    folders = looked_in(spec)
    if weight.sha256:
        folders += [
            cache_dir() / "weights" / other.name
            for other in model_specs().values()
            if other.name != spec.name
            and any(f.sha256 == weight.sha256 for f in (*other.files, *other.image_files))
        ]
    for folder in folders:
        candidate = folder / weight.filename
        if candidate.is_file():
            if verify:
                _check_cached(candidate, weight)
            return candidate
    return None


def looked_in(spec: ModelSpec) -> list[Path]:
    """The folders searched for ``spec``'s files when no ``--weights`` is given, in
    order: sdgen's cache (where downloads go), then the Keras caches."""
    return [cache_dir() / "weights" / spec.name, *keras_cache_dirs()]


def _missing_error(
    spec: ModelSpec, missing: list[WeightFile], download_error: str | None
) -> WeightsError:
    """One message for every file of ``spec`` that is not here: what is missing, where
    sdgen looked, why it could not fetch them (``download_error``; None: offline), and
    the three ways out."""
    names = ", ".join(w.filename for w in missing)
    one = len(missing) == 1
    noun = "weights file" if one else "weights files"
    folders = [str(p) for p in looked_in(spec)]
    places = ", ".join(folders[:-1]) + f" or {folders[-1]}" if len(folders) > 1 else folders[0]
    them = "it" if one else "them"
    source = _published_at(missing)
    mirror = os.environ.get("SDGEN_WEIGHTS_MIRROR")
    if download_error is None:
        reason = "--offline is set"
        fetch = f"run without --offline to download {them} (from $SDGEN_WEIGHTS_MIRROR if set)"
    else:
        reason = download_error
        now = f" (now {mirror})" if mirror else ""
        fetch = f"set $SDGEN_WEIGHTS_MIRROR{now} to a server that has {them}"
    if [w.role for w in missing] == ["checkpoint"]:
        put = (
            f"download it from {source} into {folders[0]} (sdgen checks its sha256 and "
            "converts it into the model store once)"
        )
    else:
        put = f"put {them} in a folder and pass --weights DIR" + (
            f" (download {them} from {source})" if source else ""
        )
    return WeightsError(
        f"{noun} {names} of {spec.name} {'is' if one else 'are'} missing: not in {places}, "
        f"and {reason}. Ways out: {put}; or {fetch}; or try sdgen without weights: "
        "--model tiny"
    )


def _published_at(weights: list[WeightFile]) -> str:
    """Where ``weights`` are published: the folder of their URLs when they share one,
    else the URLs; "" for files without one (an imported model's)."""
    urls = [w.url for w in weights if w.url]
    bases = {url.rsplit("/", 1)[0] for url in urls}
    if len(urls) > 1 and len(bases) == 1:
        return f"{bases.pop()}/"
    return ", ".join(urls)


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
        apply_umask(temporary)  # mkstemp made it 0600
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
