"""The TensorFlow runtime: keras_cv's networks compiled with ``tf.function``."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import MissingEncoderError
from ..families import family_of
from ..spec import ModelSpec
from . import memory
from .base import Networks, check_images, inserted_vectors
from .keras_graphs import (
    _image_size,
    decoder_on_layers,
    encoder_on_layers,
    signature_of,
    unet_on_layers,
)
from .signature import NetworkSignature

#: ``load_encoder(height, width)``: the model's VAE encoder built for images of that
#: size, its weights loaded (resolving or downloading them first, if need be).
EncoderLoader = Callable[[int, int], object]


@dataclass
class DeviceSettings:
    """How the networks run.

    xla: compile the U-Net step and the decoder with XLA.
    mixed_precision: build the networks under the ``mixed_float16`` policy.
    split_batch: call the compiled one-row U-Net once per row (unconditional and
        conditional rows separately), instead of once on all 2B rows. On this 2-core CPU
        a batch of two costs more than two batches of one (2.04 s against 1.11 s per step
        at 256 px, 4.85 s against 4.54 s at 512 px), single-row calls make every image
        bitwise independent of its batch, and one trace serves every batch size; GPUs
        want the fused call.
    device: "CPU" or "GPU", for reports.
    runtime: "tensorflow" or "openvino", for reports.
    free_memory: bytes free on the GPU before sdgen loaded anything (None: unknown or a
        CPU), for ``--batch-size auto``.
    """

    xla: bool = False
    mixed_precision: bool = False
    split_batch: bool = True
    device: str = "CPU"
    runtime: str = "tensorflow"
    free_memory: int | None = None


def import_tensorflow(quiet: bool | None = None):
    """Import TensorFlow; with ``quiet``, its start-up chatter (absl and C++ logs written
    straight to file descriptor 2 before any log level applies, and the ``cuInit`` error
    of a machine without a GPU) is kept off the terminal.

    quiet: None is quiet unless ``$TF_CPP_MIN_LOG_LEVEL`` asks for logs (is set below 3),
    so the library is as quiet as the CLI. sdgen imports TensorFlow here when the first
    model loads (``detect_device``), never to read, check or plan a request."""
    if quiet is None:
        quiet = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3") == "3"
    if "tensorflow" in sys.modules or not quiet:
        import tensorflow

        return tensorflow
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    import logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    return tensorflow


def detect_device(xla: bool | None = None, mixed_precision: bool | None = None) -> DeviceSettings:
    """Device defaults: on a GPU, XLA on, mixed precision on (compute capability 7.0+) and
    one fused U-Net call per step; on a CPU XLA and mixed precision off, because there
    XLA made keras_cv slower (32 s against 23 s for 4 steps at 256 px on 2 cores) and
    float16 is emulated, and one U-Net call per row (see ``DeviceSettings``)."""
    tf = import_tensorflow()

    gpus = tf.config.list_physical_devices("GPU")
    capability = (0, 0)
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        capability = details.get("compute_capability") or (0, 0)
    return DeviceSettings(
        xla=bool(gpus) if xla is None else xla,
        mixed_precision=(capability >= (7, 0)) if mixed_precision is None else mixed_precision,
        split_batch=not gpus,
        device="GPU" if gpus else "CPU",
        # asked before any network is built: TensorFlow then reserves most of the GPU
        free_memory=memory.gpu_free_bytes() if gpus else None,
    )


class TensorFlowBackend:
    """Runs built keras_cv networks, for any ``NetworkSignature``.

    The networks given are the first signature's. Another signature (image size, context
    length) gets a Keras functional model that calls the SAME layer objects on new
    ``Input``s (``on_layers``), so every signature shares one copy of the weights:
    nothing is rebuilt, copied or read from disk again. Before this each new size built
    another U-Net and copied the weights into it with ``set_weights`` (3.4 GB more per
    size at full size; ``benchmarks/memory_sizes.py`` measures both).

    The VAE encoder (``encode_images``, for image tasks) is built by ``load_encoder`` on
    first use, at the first size asked for, and shared by every other size the same way;
    without ``load_encoder`` only a generated model (``tiny``) has one, filled from its
    seed.
    """

    def __init__(
        self,
        spec: ModelSpec,
        text_encoder,
        diffusion_model,
        decoder,
        device: DeviceSettings,
        load_encoder: EncoderLoader | None = None,
    ):
        self.spec = spec
        self.device = device
        self.text_encoder = text_encoder
        self.diffusion_model = diffusion_model
        self.decoder = decoder
        self.signature = signature_of(diffusion_model)
        self._unets = {self.signature: diffusion_model}
        self._decoders = {self.signature.size: decoder}
        self._decode_calls: dict[tuple[int, int], Callable] = {}  # compiled, per size
        self._networks: dict[NetworkSignature, Networks] = {}
        self._encode = self._function(lambda tokens, positions: text_encoder([tokens, positions]))
        self._text_states: dict[int, Callable] = {}  # compiled, per clip skip
        #: The original value of each weight a LoRA changed, kept to restore it.
        self._pristine: dict[tuple[str, int], np.ndarray] = {}
        #: The VAE encoder, once an image task asked for it (None until then).
        self.encoder = None
        self._load_encoder = load_encoder or (lambda h, w: generated_encoder(spec, h, w))
        self._dtype_policy = getattr(decoder, "dtype_policy", None)
        self._encoders: dict[tuple[int, int], object] = {}
        self._encode_image_calls: dict[tuple[int, int], Callable] = {}  # compiled, per size

    def encode(
        self,
        tokens: np.ndarray,
        positions: np.ndarray,
        clip_skip: int = 1,
        vectors: np.ndarray | None = None,
        mask: np.ndarray | None = None,
    ) -> np.ndarray:
        if clip_skip == 1 and vectors is None:
            return np.asarray(self._encode(tokens, positions), dtype=np.float32)
        if clip_skip not in self._text_states:
            from ..networks.text_states import text_states_on_layers

            model = text_states_on_layers(self.text_encoder, clip_skip)
            self._text_states[clip_skip] = self._function(lambda *inputs: model(list(inputs)))
        width = self.text_encoder.outputs[0].shape[-1]
        vectors, mask = inserted_vectors(tokens, vectors, mask, width)
        states = self._text_states[clip_skip](tokens, positions, vectors, mask)
        return np.asarray(states, dtype=np.float32)

    def encode_images(self, images: np.ndarray) -> np.ndarray:
        """Latents (N, H/8, W/8, 4) float32 of N images (N, H, W, 3) in [-1, 1]: the VAE
        posterior's mean times 0.18215 (keras_cv's ``ImageEncoder``), one image at a
        time, so each image's latents are independent of its batch. The encoder is
        built (its weights resolved) on the first call; ``MissingEncoderError`` if the
        model has none."""
        images = check_images(images)
        call = self._encode_image_call(images.shape[1:3])
        return np.concatenate([call(images[i : i + 1]) for i in range(len(images))])

    def _encode_image_call(self, size: tuple[int, int]) -> Callable:
        """The compiled encoder of ``size`` (height, width)."""
        size = (int(size[0]), int(size[1]))
        if size not in self._encode_image_calls:
            encoder = self.encoder_at(*size)
            import tensorflow as tf

            compiled = self._function(
                lambda images: tf.cast(encoder(images, training=False), tf.float32)
            )
            self._encode_image_calls[size] = lambda images: np.asarray(compiled(images))
        return self._encode_image_calls[size]

    def encoder_at(self, height: int, width: int):
        """The VAE encoder for ``height`` x ``width`` images: built (by ``load_encoder``)
        at the first size asked for, on its layers at every other."""
        if self.encoder is None:
            self.encoder = self._build_encoder(height, width)
            self._encoders[_image_size(self.encoder)] = self.encoder
        if (height, width) not in self._encoders:
            self._encoders[(height, width)] = encoder_on_layers(self.encoder, height, width)
        return self._encoders[(height, width)]

    def _build_encoder(self, height: int, width: int):
        """``load_encoder``'s network, under the dtype policy the other networks were
        built with (another pipeline may have changed the global one since)."""
        import keras

        if self._dtype_policy is None:
            return self._load_encoder(height, width)
        current = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy(self._dtype_policy)
        try:
            return self._load_encoder(height, width)
        finally:
            keras.mixed_precision.set_global_policy(current)

    def set_weight_deltas(self, deltas: dict[tuple[str, int], np.ndarray]) -> None:
        """Make the text encoder's and U-Net's weights equal their loaded values plus
        ``deltas`` (``{(role, position): change}``, from ``lora_deltas``); ``{}`` restores
        them. Weights an earlier call changed are first restored bit for bit from
        pristine copies of just those tensors. Nothing is rebuilt, reloaded or retraced:
        the compiled steps read the variables as assigned."""
        from ..adapters.lora import apply_deltas_to_keras

        networks = {"text_encoder": self.text_encoder, "diffusion_model": self.diffusion_model}
        apply_deltas_to_keras(networks, deltas, self._pristine)

    def auto_batch_size(self, height: int, width: int) -> int:
        """Images per batch for ``--batch-size auto``: on a CPU 1, because there a batch
        is slower than its images one by one (see ``DeviceSettings.split_batch``); on a
        GPU as many as its free memory holds after the weights (see ``memory``)."""
        if self.device.device != "GPU" or self.device.free_memory is None:
            return 1
        element = 2 if self.device.mixed_precision else 4
        networks = (self.text_encoder, self.diffusion_model, self.decoder)
        weights = 4 * sum(network.count_params() for network in networks)  # float32 variables
        reserved = weights + memory.decoder_bytes(height, width, element)
        # an image is two U-Net rows under classifier-free guidance
        per_image = 2 * memory.unet_row_bytes(family_of(self.spec), height, width, element)
        return memory.fit_batch(self.device.free_memory, reserved, per_image)

    def networks(self, signature: NetworkSignature) -> Networks:
        if signature not in self._networks:
            denoise, guided = self._compile_denoise(self.diffusion_model_at(signature))
            decode = self._decode_call(signature.size)
            self._networks[signature] = Networks(signature, denoise, decode, guided)
        return self._networks[signature]

    def diffusion_model_at(self, signature: NetworkSignature):
        """The U-Net for ``signature``, on the first signature's layers and weights."""
        if signature not in self._unets:
            self._unets[signature] = unet_on_layers(self.diffusion_model, signature)
        return self._unets[signature]

    def _decode_call(self, size: tuple[int, int]) -> Callable:
        """The compiled decoder of ``size``, shared by every signature of that size."""
        if size not in self._decode_calls:
            decoder = self.decoder_at(*size)
            import tensorflow as tf

            compiled = self._function(
                lambda latents: tf.cast(decoder(latents, training=False), tf.float32)
            )
            self._decode_calls[size] = lambda latents: np.asarray(compiled(latents))
        return self._decode_calls[size]

    def decoder_at(self, height: int, width: int):
        """The decoder for ``height`` x ``width`` images, on the first one's layers."""
        if (height, width) not in self._decoders:
            self._decoders[(height, width)] = decoder_on_layers(self.decoder, height, width)
        return self._decoders[(height, width)]

    def _compile_denoise(self, diffusion_model) -> tuple[Callable, Callable | None]:
        """``(denoise, guided)`` for one U-Net: raw predictions per row, and on the
        fused path (``split_batch`` off) the guided fast path as well.

        split_batch (the CPU default): the U-Net compiled for one row, called once per
        row, and the rows returned; the pipeline combines the guidance in NumPy. One
        trace serves every batch size (tracing a step that held 2B U-Net calls cost 5 s
        per row for the tiny model, and a trace per batch size).

        Fused (GPUs): one U-Net call on all rows. ``guided`` keeps the guidance inside
        that one compiled (and with XLA fused) step, so the 2B predictions never leave
        the device before they are combined; it is the measured path of
        ``benchmarks/gpu.py``, and equals ``denoise`` plus the pipeline's combination
        up to rounding."""
        import tensorflow as tf

        split = self.device.split_batch

        def unet(latents, t_emb, contexts):
            return tf.cast(diffusion_model([latents, t_emb, contexts], training=False), tf.float32)

        compiled_rows = self._function(unet)
        if split:

            def one_by_one(latents, t_emb, contexts):
                rows = range(len(latents))
                return np.concatenate(
                    [
                        np.asarray(
                            compiled_rows(latents[i : i + 1], t_emb[i : i + 1], contexts[i : i + 1])
                        )
                        for i in rows
                    ]
                )

            return one_by_one, None

        def guided_step(latents, t_emb, contexts, guidance_scale):
            unconditional, conditional = tf.split(unet(latents, t_emb, contexts), 2)
            return unconditional + guidance_scale * (conditional - unconditional)

        compiled_guided = self._function(guided_step)

        def denoise(latents, t_emb, contexts):
            return _call_padded(compiled_rows, latents, t_emb, contexts)

        def guided(latents, t_emb, contexts, guidance_scale):
            return np.asarray(compiled_guided(latents, t_emb, contexts, guidance_scale))

        return denoise, guided

    def _function(self, fn):
        import tensorflow as tf

        return tf.function(fn, jit_compile=self.device.xla)


def generated_encoder(spec: ModelSpec, height: int, width: int):
    """A generated model's VAE encoder (``tiny``'s, filled from its seed + 3); for any
    other model ``MissingEncoderError``: its encoder's weights must be given."""
    if not spec.generated:
        raise MissingEncoderError(
            f"no VAE encoder was given for {spec.name}: load it with "
            "sdgen.pipeline.load_pipeline, which finds its weights"
        )
    return family_of(spec).build("encoder", spec, height, width)


def _call_padded(fn, *arrays):
    """Call ``fn`` with every array padded to a batch of at least two rows, and return the
    rows that were asked for (used by the fused U-Net call).

    TensorFlow's reductions (group and layer norm) collapse a batch dimension of 1 and sum
    in another order, so a lone image would differ in the last bits from the same image
    inside a batch; the guided call always has 2B >= 2 rows, and this pads the unguided one.
    """
    batch = len(arrays[0])
    if batch >= 2:
        return np.asarray(fn(*arrays))
    padded = [np.concatenate([a, a]) for a in arrays]
    return np.asarray(fn(*padded))[:batch]


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, MemoryError):
        return True
    tf = sys.modules.get("tensorflow")  # never imported just to look at an error
    return tf is not None and isinstance(error, tf.errors.ResourceExhaustedError)
