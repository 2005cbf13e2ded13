"""The OpenVINO runtime: keras_cv's networks converted once, cached, run in float32.

The first use of a model at a ``NetworkSignature`` converts its Keras networks
(``openvino.convert_model`` on a ``tf.function`` of each) and saves them under
``$SDGEN_CACHE/openvino/<model>-<fingerprint>/``, one file per network and signature
(``diffusion_model-512x512-ctx77-in4.xml``, ``decoder-512x512.xml``, and for image
tasks ``encoder-512x512-<weights>.xml``); later runs
read the converted files directly, so no Keras network is built and no random weights
are drawn only to be overwritten. The CPU plugin runs with ``INFERENCE_PRECISION_HINT``
f32: its default on CPUs with bfloat16 units is bfloat16, which moves the U-Net's output
by ~3e-2 (see the README's benchmark section).

Converted files are keyed by a fingerprint of the weights (the files' paths, sizes and
modification times, or the tiny model's seed), sdgen's, keras_cv's and OpenVINO's
versions, and the source of the converter itself and of the code that builds the Keras
graphs (see :mod:`.openvino_cache`), so new weights, a new version, or a change to the
networks or to how they are traced converts again. The VAE encoder's weights are resolved only
when an image task first needs them (a text-to-image run may never download them), so
they are not part of the folder's fingerprint: its files carry their own, of the same
parts and the encoder's weights file, in their name.

Batch sizes: the text encoder is traced with a dynamic batch (any number of 77-token
rows). The U-Net and the decoder are traced for a batch of one, on purpose: ``denoise``
and ``decode`` run one row at a time, which on a CPU is as fast as a batched call and
keeps every image bit-independent of its batch, and a static shape lets the CPU plugin
plan its buffers once. So the files do not limit the pipeline's batch size; a runtime
that wanted batched calls would trace ``None`` there as the text encoder does.

Weight deltas (LoRA): ``set_weight_deltas`` adds deltas to the text encoder's and the
U-Net's weights without converting anything again. Each converted text-encoder and
U-Net file has a weight map beside it (:mod:`sdgen.runtimes.openvino_weights`) naming
the constant that holds each Keras weight; a switch reads the file (mapped, not
copied), replaces the touched constants with base + delta in memory, and compiles that
model. The files in the cache always hold the unmerged weights, and nothing merged is
ever written there. A switch costs about one compile of each touched network (the tiny
U-Net: 6 s on 2 busy cores, of which reading and patching 0.4 s), against a Keras build
and a conversion per combination. Keeping the projections as graph inputs instead, fed
at each switch without compiling, was measured and rejected: the tiny U-Net's row went
from 0.046 s to 0.076 s, as the CPU plugin can then not pre-pack those weights, and a
run would pay that at every step of every image.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import MissingEncoderError, UsageError
from ..spec import ModelSpec
from . import openvino_weights
from .base import Networks, check_images, inserted_vectors
from .openvino_cache import default_folder, fingerprint, release_mapped_weights
from .openvino_weights import WeightDeltaError, WeightMap
from .signature import NetworkSignature

#: ``load(role, signature)`` -> a built Keras network for ``signature`` holding the
#: model's weights (the text encoder's ignores the signature).
KerasLoader = Callable[[str, NetworkSignature], object]

#: ``encoder_weights()`` -> the path of the model's VAE encoder weights, resolved (or
#: downloaded) when first called; None for a generated model (``tiny``).
EncoderWeights = Callable[[], Path | None]

#: ``(role, position)`` -> a float32 array to add to weight ``position`` of that Keras
#: network's ``model.weights`` (role ``text_encoder`` or ``diffusion_model``).
WeightDeltas = dict[tuple[str, int], np.ndarray]

#: The Keras network whose weights each converted network holds (None: no deltas).
WEIGHT_ROLES = ("text_encoder", "diffusion_model")

#: The CPU plugin's settings: float32 arithmetic, as TensorFlow computes.
COMPILE_CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}


class RuntimeUnavailableError(UsageError):
    """A runtime was asked for whose package is not installed."""


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


class OpenVinoBackend:
    """Runs converted networks on OpenVINO's CPU plugin, converting what the cache lacks.

    folder: where this model's converted files live (one per network and size).
    load_keras: builds a Keras network with its weights, called only to convert (the
        VAE encoder's as role ``encoder``).
    encoder_weights: where the VAE encoder's weights are, asked on the first
        ``encode_images``; without it only a generated model (``tiny``) has an encoder.
    """

    def __init__(
        self,
        spec: ModelSpec,
        folder: Path,
        load_keras: KerasLoader,
        encoder_weights: EncoderWeights | None = None,
    ):
        ov = import_openvino()
        self.spec = spec
        self.folder = Path(folder)
        self.converted: list[str] = []  # files converted by this process, for reports
        self._load_keras = load_keras
        self._core = ov.Core()
        self._networks: dict[NetworkSignature, Networks] = {}
        self._unets: dict[NetworkSignature, _Request] = {}
        self._decoders: dict[tuple[int, int], _Request] = {}
        self._encoders: dict[tuple[int, int], _Request] = {}
        self._encoder_weights = encoder_weights or (lambda: _generated_encoder(spec))
        self._encoder_fingerprint: str | None = None
        # the deltas merged into every compiled network, per Keras role and position
        self._deltas: dict[str, dict[int, np.ndarray]] = {role: {} for role in WEIGHT_ROLES}
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
            self._unets[signature] = _Request(self._compiled("diffusion_model", signature))
            if signature.size not in self._decoders:
                self._decoders[signature.size] = _Request(self._compiled("decoder", signature))
            decoder = self._decoders[signature.size]

            def denoise(latents, t_emb, contexts):
                unet = self._unets[signature]  # looked up per call: deltas swap it
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

    def encode_images(self, images: np.ndarray) -> np.ndarray:
        """Latents (N, H/8, W/8, 4) float32 of images (N, H, W, 3) in [-1, 1] (the VAE
        posterior's mean times 0.18215), one image at a time like ``decode``. The first
        call at a size converts the encoder for it, unless the cache has it; the
        encoder's weights are resolved on the first call (``MissingEncoderError``)."""
        images = check_images(images)
        size = (int(images.shape[1]), int(images.shape[2]))
        if size not in self._encoders:
            signature = NetworkSignature(*size)
            self._encoders[size] = _Request(self._compiled("encoder", signature))
        encoder = self._encoders[size]
        return np.concatenate([encoder(images[i : i + 1]) for i in range(len(images))])

    def encoder_fingerprint(self) -> str:
        """The part of the encoder's file names that names its weights (resolving them
        on the first call): ``fingerprint`` of the model and its encoder weights file."""
        if self._encoder_fingerprint is None:
            path = self._encoder_weights()
            paths = {} if path is None else {"encoder": Path(path)}
            self._encoder_fingerprint = fingerprint(self.spec, paths)[:12]
        return self._encoder_fingerprint

    def set_weight_deltas(self, deltas: WeightDeltas) -> None:
        """Run every network with ``deltas`` added to its base weights, replacing any
        earlier deltas (``{}``: the base model again, bit for bit).

        deltas: ``(role, position)`` -> a float32 array in the shape of weight
            ``position`` of that role's Keras ``model.weights``, role ``text_encoder``
            or ``diffusion_model``.

        Recompiles, from the cached files and in memory, the networks whose deltas
        changed: the text encoder and each ``text_states-skipN`` variant compiled so
        far, and each U-Net signature compiled so far; networks compiled later get the
        same deltas. The decoder is never touched and nothing is converted or written.
        Raises ``WeightDeltaError`` (before anything changes) for an unknown role or
        position, a wrong shape, or a weight OpenVINO folded beyond recognition.
        """
        wanted: dict[str, dict[int, np.ndarray]] = {role: {} for role in WEIGHT_ROLES}
        for (role, position), delta in deltas.items():
            if role not in wanted:
                raise WeightDeltaError(
                    f"no weight deltas for the {role!r}: choose one of {', '.join(WEIGHT_ROLES)}"
                )
            wanted[role][int(position)] = np.asarray(delta, np.float32)
        changed = {role for role in WEIGHT_ROLES if not _same(wanted[role], self._deltas[role])}
        live = [
            ("text_encoder", None),
            *((f"text_states-skip{n}", None) for n in self._text_states),
        ]
        live = [key for key in live if "text_encoder" in changed]
        if "diffusion_model" in changed:
            live += [("diffusion_model", signature) for signature in self._unets]
        for role, signature in live:  # every check before any network changes
            self._weight_map(role, signature).check(_weight_role(role), wanted[_weight_role(role)])
        self._deltas = wanted
        for role, signature in live:
            # the old network goes first: at full size a U-Net's compiled weights are 3.4 GB
            if role == "text_encoder":
                self._encode = None
                self._encode = _Request(self._compiled(role, signature))
            elif signature is None:
                clip_skip = int(role.removeprefix("text_states-skip"))
                self._text_states[clip_skip] = None
                self._text_states[clip_skip] = _Request(self._compiled(role, signature))
            else:
                self._unets[signature] = None
                self._unets[signature] = _Request(self._compiled(role, signature))

    def _weight_map(self, role: str, signature: NetworkSignature | None) -> WeightMap:
        return WeightMap.load(openvino_weights.sidecar(self.path(role, signature)))

    def path(self, role: str, signature: NetworkSignature | None) -> Path:
        """The converted file of ``role`` for ``signature`` (None: the text encoder, or
        its ``text_states-skipN`` variant, see :mod:`sdgen.networks.text_states`).
        A decoder depends only on the image size, so its name carries only that; an
        encoder, the size and its weights' fingerprint (see the module docstring)."""
        if signature is None:
            name = role
        elif role == "decoder":
            name = f"{role}-{signature.width}x{signature.height}"
        elif role == "encoder":
            name = f"{role}-{signature.width}x{signature.height}-{self.encoder_fingerprint()}"
        else:
            name = f"{role}-{signature.file_stem()}"
        return self.folder / f"{name}.xml"

    def _compiled(self, role: str, signature: NetworkSignature | None):
        """``role``'s network for ``signature``, compiled with this backend's deltas;
        converted first if the cache lacks its file or (for a network that takes deltas)
        the weight map beside it."""
        path = self.path(role, signature)
        weight_role = _weight_role(role)
        mapped = weight_role is None or openvino_weights.sidecar(path).exists()
        if not (path.exists() and mapped):
            self._convert(role, signature, path)
        deltas = self._deltas.get(weight_role) if weight_role else None
        if deltas:
            weight_map = self._weight_map(role, signature)
            weight_map.check(weight_role, deltas)
            model = self._core.read_model(str(path))
            model = openvino_weights.patched_model(model, weight_map, deltas, add=True)
            compiled = self._core.compile_model(model, "CPU", COMPILE_CONFIG)
            del model
        else:
            compiled = self._core.compile_model(str(path), "CPU", COMPILE_CONFIG)
        release_mapped_weights(self.folder)
        return compiled

    def _convert(self, role: str, signature: NetworkSignature | None, path: Path) -> None:
        import gc

        from .tensorflow import import_tensorflow

        import_tensorflow(quiet=os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "3")
        import keras

        keras.mixed_precision.set_global_policy("float32")
        if signature is None:  # the text encoder: any signature builds it
            signature = NetworkSignature(self.spec.default_size, self.spec.default_size)
        if role.startswith("text_states-skip"):  # the text encoder, another way round
            from ..networks.text_states import text_states_on_layers

            clip_skip = int(role.removeprefix("text_states-skip"))
            base = self._load_keras("text_encoder", signature)
            network = text_states_on_layers(base, clip_skip)
        else:
            base = network = self._load_keras(role, signature)
        # the weights are mapped by position in the Keras network deltas are given for
        variables = list(base.weights) if _weight_role(role) else []
        self.folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{path.stem}-", dir=self.folder))
        try:
            # distinct values first; should one be folded away, again with the true ones
            for distinct in (True, False):
                weight_map = openvino_weights.convert_in(
                    self._core, staging / path.name, role, network, variables, distinct
                )
                if weight_map is not None:
                    break
            # the .bin first: an .xml present means its weights (and map) are complete
            os.replace(staging / path.with_suffix(".bin").name, path.with_suffix(".bin"))
            if weight_map is not None and variables:
                map_path = openvino_weights.sidecar(path)
                weight_map.save(staging / map_path.name)
                os.replace(staging / map_path.name, map_path)
            os.replace(staging / path.name, path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        del network, base, variables
        gc.collect()
        self.converted.append(path.name)


def _weight_role(role: str) -> str | None:
    """The Keras network whose weights the converted network ``role`` holds."""
    if role == "text_encoder" or role.startswith("text_states-skip"):
        return "text_encoder"
    return "diffusion_model" if role == "diffusion_model" else None


def _generated_encoder(spec: ModelSpec) -> None:
    """No weights file: a generated model's encoder is filled from its seed; any other
    model's weights must be given (``MissingEncoderError``)."""
    if not spec.generated:
        raise MissingEncoderError(
            f"no VAE encoder was given for {spec.name}: load it with "
            "sdgen.pipeline.load_pipeline, which finds its weights"
        )
    return None


def _same(a: dict[int, np.ndarray], b: dict[int, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


class _Request:
    """One compiled network and its infer request: ``request(*arrays)`` -> its output."""

    def __init__(self, compiled):
        self._request = compiled.create_infer_request()

    def __call__(self, *arrays: np.ndarray) -> np.ndarray:
        outputs = self._request.infer([np.ascontiguousarray(a) for a in arrays])
        return np.array(outputs[0], dtype=np.float32, copy=True)


__all__ = [
    "OpenVinoBackend",
    "RuntimeUnavailableError",
    "WeightDeltaError",
    "WeightDeltas",
    "default_folder",
    "fingerprint",
]
