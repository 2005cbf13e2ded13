"""The OpenVINO runtime's cache of converted networks: the fingerprint that names a
model's folder (its weights, the versions, and the code that builds and traces the
graphs), where that folder is, and giving back the pages of its weight files that a
compiled network no longer reads (see :mod:`.openvino`)."""

from __future__ import annotations

import ctypes
import hashlib
import os
import sys
from pathlib import Path

from ..spec import ModelSpec


def fingerprint(spec: ModelSpec, weight_paths: dict[str, Path]) -> str:
    """A short hash naming the converted files of ``spec`` with these weights.

    Adapters (LoRA weight deltas) are not part of it, on purpose: the files it names
    always hold the base weights, and deltas are merged in memory only, at each
    ``OpenVinoBackend.set_weight_deltas`` (see the module docstring). No merged network
    is ever written to the cache, so no file could be reused for the wrong adapters: an
    unmerged file with deltas merged on load, never a merged one, is what a LoRA run
    reads."""
    from importlib.metadata import version

    from .. import __version__

    parts = [spec.family, str(spec.seed), __version__, version("keras-cv"), version("openvino")]
    # how the Keras graphs are built and traced is part of what was converted
    for source in _graph_sources():
        parts.append(f"{source.name}:{hashlib.sha256(source.read_bytes()).hexdigest()}")
    for role in sorted(weight_paths):
        path = Path(weight_paths[role]).resolve()
        stat = path.stat()
        parts.append(f"{role}={path}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _graph_sources() -> list[Path]:
    """The source files whose code decides what a converted file holds: this converter,
    the signature, the TensorFlow runtime's graph re-use (``on_layers``), the pipeline's
    ``_build``, the network layers and layouts, and the family records."""
    package = Path(__file__).resolve().parent.parent
    here = ["runtimes/openvino.py", "runtimes/openvino_weights.py", "runtimes/signature.py"]
    here += ["runtimes/tensorflow.py", "runtimes/keras_graphs.py"]
    builders = sorted([*(package / "networks").glob("*.py"), *(package / "families").glob("*.py")])
    return [package / name for name in [*here, "pipeline/loading.py"]] + builders


_MADV_DONTNEED = 4


def release_mapped_weights(folder: Path) -> int:
    """Give back this process's resident pages of the converted weight files in
    ``folder``; returns the bytes of the mappings released.

    OpenVINO maps a ``.bin`` file read-only and, once the network is compiled, runs on
    its own repacked copy of the weights. The pages it read stay resident in the mapping
    and count in the RSS a second time: 3.4 GB for the SD U-Net, 7.35 GB resident
    against 4.0 GB after release, same output bit for bit and same speed. Should a page
    be touched again, the kernel reads it back from the file, so releasing is safe for
    read-only mappings (the only ones touched). Linux only; elsewhere nothing happens.
    """
    if not sys.platform.startswith("linux"):
        return 0
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return 0
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    prefix = str(Path(folder).resolve()) + os.sep
    released = 0
    with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) < 6 or "w" in fields[1]:
                continue
            path = fields[5].rstrip("\n")
            if not (path.startswith(prefix) and path.endswith(".bin")):
                continue
            start, end = (int(value, 16) for value in fields[0].split("-"))
            if madvise(start, end - start, _MADV_DONTNEED) == 0:
                released += end - start
    return released


def default_folder(spec: ModelSpec, weight_paths: dict[str, Path]) -> Path:
    from ..weights import cache_dir

    return cache_dir() / "openvino" / f"{spec.name}-{fingerprint(spec, weight_paths)}"


__all__ = ["default_folder", "fingerprint", "release_mapped_weights"]
