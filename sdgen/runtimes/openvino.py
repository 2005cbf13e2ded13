"""The OpenVINO runtime: keras_cv's networks converted once, cached, run in float32.

The first use of a model at a ``NetworkSignature`` converts its Keras networks
(``openvino.convert_model`` on a ``tf.function`` of each) and saves them under
``$SDGEN_CACHE/openvino/<model>-<fingerprint>/``, one file per network and signature
(``diffusion_model-512x512-ctx77-in4.xml``, ``decoder-512x512.xml``); later runs
read the converted files directly, so no Keras network is built and no random weights
are drawn only to be overwritten. The CPU plugin runs with ``INFERENCE_PRECISION_HINT``
f32: its default on CPUs with bfloat16 units is bfloat16, which moves the U-Net's output
by ~3e-2 (see the README's benchmark section).

Converted files are keyed by a fingerprint of the weights (the files' paths, sizes and
modification times, or the tiny model's seed), sdgen's, keras_cv's and OpenVINO's
versions, and the source of the converter itself and of the code that builds the Keras
graphs (``_graph_sources``), so new weights, a new version, or a change to the networks
or to how they are traced converts again.

Batch sizes: the text encoder is traced with a dynamic batch (any number of 77-token
rows). The U-Net and the decoder are traced for a batch of one, on purpose: ``denoise``
and ``decode`` run one row at a time, which on a CPU is as fast as a batched call and
keeps every image bit-independent of its batch, and a static shape lets the CPU plugin
plan its buffers once. So the files do not limit the pipeline's batch size; a runtime
that wanted batched calls would trace ``None`` there as the text encoder does.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import SdgenError, UsageError
from ..spec import ModelSpec
from .base import Networks, inserted_vectors
from .signature import NetworkSignature

#: ``load(role, signature)`` -> a built Keras network for ``signature`` holding the
#: model's weights (the text encoder's ignores the signature).
KerasLoader = Callable[[str, NetworkSignature], object]

#: The CPU plugin's settings: float32 arithmetic, as TensorFlow computes.
COMPILE_CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}


class RuntimeUnavailableError(UsageError):
    """A runtime was asked for whose package is not installed."""


class ConversionError(SdgenError):
    """A network could not be converted to OpenVINO's format."""


def import_openvino():
    try:
        import openvino
    except ImportError as error:
        raise RuntimeUnavailableError(
            "--runtime openvino needs OpenVINO: in your sdgen clone, "
            ".venv/bin/pip install -e '.[openvino]'"
        ) from error
    return openvino


def check_options(xla: bool | None, mixed_precision: bool | None) -> None:
    """Raise ``UsageError`` for TensorFlow-only options, or if OpenVINO is missing."""
    if xla or mixed_precision:
        raise UsageError("--xla and --mixed-precision apply to the tensorflow runtime only")
    import_openvino()


def fingerprint(spec: ModelSpec, weight_paths: dict[str, Path]) -> str:
    """A short hash naming the converted files of ``spec`` with these weights."""
    from importlib.metadata import version

    from .. import __version__

    ov = import_openvino()
    parts = [spec.family, str(spec.seed), __version__, version("keras-cv"), ov.__version__]
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
    here = ["runtimes/openvino.py", "runtimes/signature.py", "runtimes/tensorflow.py"]
    builders = sorted([*(package / "networks").glob("*.py"), *(package / "families").glob("*.py")])
    return [package / name for name in [*here, "pipeline/loading.py"]] + builders


class OpenVinoBackend:
    """Runs converted networks on OpenVINO's CPU plugin, converting what the cache lacks.

    folder: where this model's converted files live (one per network and size).
    load_keras: builds a Keras network with its weights, called only to convert.
    """

    def __init__(self, spec: ModelSpec, folder: Path, load_keras: KerasLoader):
        ov = import_openvino()
        self.spec = spec
        self.folder = Path(folder)
        self.converted: list[str] = []  # files converted by this process, for reports
        self._load_keras = load_keras
        self._core = ov.Core()
        self._networks: dict[NetworkSignature, Networks] = {}
        self._decoders: dict[tuple[int, int], _Request] = {}
        text_encoder = self._compiled("text_encoder", None)
        self._encode = _Request(text_encoder)
        self._text_states: dict[int, _Request] = {}  # per clip skip
        self._text_width = text_encoder.outputs[0].get_partial_shape()[-1].get_length()

    def encode(
        self,
        tokens: np.ndarray,
        positions: np.ndarray,
        clip_skip: int = 1,
        vectors: np.ndarray | None = None,
        mask: np.ndarray | None = None,
    ) -> np.ndarray:
        tokens, positions = tokens.astype(np.int32), positions.astype(np.int32)
        if clip_skip == 1 and vectors is None:
            return self._encode(tokens, positions)
        if clip_skip not in self._text_states:
            role = f"text_states-skip{clip_skip}"
            self._text_states[clip_skip] = _Request(self._compiled(role, None))
        vectors, mask = inserted_vectors(tokens, vectors, mask, self._text_width)
        return self._text_states[clip_skip](tokens, positions, vectors, mask)

    def auto_batch_size(self, height: int, width: int) -> int:
        """1: the U-Net runs one row at a time whatever the batch (see ``networks``)."""
        return 1

    def networks(self, signature: NetworkSignature) -> Networks:
        if signature not in self._networks:
            unet = _Request(self._compiled("diffusion_model", signature))
            if signature.size not in self._decoders:
                self._decoders[signature.size] = _Request(self._compiled("decoder", signature))
            decoder = self._decoders[signature.size]

            def denoise(latents, t_emb, contexts):
                # one row at a time: as fast as a fused call on a CPU, and every image
                # is independent of its batch
                rows = range(len(latents))
                return np.concatenate(
                    [unet(latents[i : i + 1], t_emb[i : i + 1], contexts[i : i + 1]) for i in rows]
                )

            def decode(latents):
                return np.concatenate([decoder(latents[i : i + 1]) for i in range(len(latents))])

            self._networks[signature] = Networks(signature, denoise, decode)
        return self._networks[signature]

    def path(self, role: str, signature: NetworkSignature | None) -> Path:
        """The converted file of ``role`` for ``signature`` (None: the text encoder, or
        its ``text_states-skipN`` variant, see :mod:`sdgen.networks.text_states`).
        A decoder depends only on the image size, so its name carries only that."""
        if signature is None:
            name = role
        elif role == "decoder":
            name = f"{role}-{signature.width}x{signature.height}"
        else:
            name = f"{role}-{signature.file_stem()}"
        return self.folder / f"{name}.xml"

    def _compiled(self, role: str, signature: NetworkSignature | None):
        path = self.path(role, signature)
        if not path.exists():
            self._convert(role, signature, path)
        compiled = self._core.compile_model(str(path), "CPU", COMPILE_CONFIG)
        release_mapped_weights(self.folder)
        return compiled

    def _convert(self, role: str, signature: NetworkSignature | None, path: Path) -> None:
        import gc

        import openvino as ov

        from .tensorflow import import_tensorflow

        import_tensorflow(quiet=os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "3")
        import keras

        keras.mixed_precision.set_global_policy("float32")
        if signature is None:  # the text encoder: any signature builds it
            signature = NetworkSignature(self.spec.default_size, self.spec.default_size)
        if role.startswith("text_states-skip"):  # the text encoder, another way round
            from ..networks.text_states import text_states_on_layers

            clip_skip = int(role.removeprefix("text_states-skip"))
            network = text_states_on_layers(self._load_keras("text_encoder", signature), clip_skip)
        else:
            network = self._load_keras(role, signature)
        try:
            converted = ov.convert_model(_concrete_function(role, network))
        except Exception as error:  # OpenVINO's frontend errors have no common base
            raise ConversionError(f"could not convert the {role} to OpenVINO: {error}") from error
        self.folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{path.stem}-", dir=self.folder))
        try:
            ov.save_model(converted, str(staging / path.name), compress_to_fp16=False)
            # the .bin first: an .xml present means its weights are complete
            os.replace(staging / path.with_suffix(".bin").name, path.with_suffix(".bin"))
            os.replace(staging / path.name, path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        # only now: the converted model's constants share the Keras network's memory
        del converted, network
        gc.collect()
        self.converted.append(path.name)


def _concrete_function(role: str, network):
    """``network`` traced for the batches the runtime calls it with: any number of rows
    for the text encoder, one row for the others (see the module docstring)."""
    import tensorflow as tf

    batch = None if role.startswith("text_") else 1
    signature = [tf.TensorSpec((batch, *t.shape[1:]), t.dtype) for t in network.inputs]
    if len(signature) == 1:
        function = tf.function(lambda x: network(x, training=False))
    else:
        function = tf.function(lambda *xs: network(list(xs), training=False))
    return function.get_concrete_function(*signature)


class _Request:
    """One compiled network and its infer request: ``request(*arrays)`` -> its output."""

    def __init__(self, compiled):
        self._request = compiled.create_infer_request()

    def __call__(self, *arrays: np.ndarray) -> np.ndarray:
        outputs = self._request.infer([np.ascontiguousarray(a) for a in arrays])
        return np.array(outputs[0], dtype=np.float32, copy=True)


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


__all__ = ["OpenVinoBackend", "RuntimeUnavailableError", "default_folder", "fingerprint"]
