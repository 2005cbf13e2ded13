"""The TensorFlow runtime: keras_cv's networks compiled with ``tf.function``."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import numpy as np

from ..families import family_of
from ..networks.layouts import latent_size
from ..spec import ModelSpec
from . import Networks, memory


@dataclass
class DeviceSettings:
    """How the networks run.

    xla: compile the U-Net step and the decoder with XLA.
    mixed_precision: build the networks under the ``mixed_float16`` policy.
    split_batch: call the U-Net once per row (unconditional and conditional rows
        separately) inside one compiled step, instead of once on all 2B rows. On this
        2-core CPU a batch of two costs more than two batches of one (2.04 s against
        1.11 s per step at 256 px, 4.85 s against 4.54 s at 512 px), and single-row calls
        make every image bitwise independent of its batch; GPUs want the fused call.
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


def import_tensorflow(quiet: bool = True):
    """Import TensorFlow; with ``quiet``, its start-up chatter (absl and C++ logs written
    straight to file descriptor 2 before any log level applies) is kept off the terminal."""
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
    import tensorflow as tf

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
    """Runs built keras_cv networks. Networks for another image size are rebuilt from
    ``spec`` and given the same weights in memory; nothing is read from disk again."""

    def __init__(
        self, spec: ModelSpec, text_encoder, diffusion_model, decoder, device: DeviceSettings
    ):
        self.spec = spec
        self.device = device
        self.text_encoder = text_encoder
        self.diffusion_model = diffusion_model
        self.decoder = decoder
        size = latent_size(diffusion_model)
        self._networks = {size: self._compile(diffusion_model, decoder)}
        self._encode = self._function(lambda tokens, positions: text_encoder([tokens, positions]))

    def encode(self, tokens: np.ndarray, positions: np.ndarray) -> np.ndarray:
        return np.asarray(self._encode(tokens, positions), dtype=np.float32)

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

    def networks(self, height: int, width: int) -> Networks:
        if (height, width) not in self._networks:
            family = family_of(self.spec)
            diffusion_model = family.build("diffusion_model", self.spec, height, width)
            diffusion_model.set_weights(self.diffusion_model.get_weights())
            decoder = family.build("decoder", self.spec, height, width)
            decoder.set_weights(self.decoder.get_weights())
            self._networks[(height, width)] = self._compile(diffusion_model, decoder)
        return self._networks[(height, width)]

    def _compile(self, diffusion_model, decoder) -> Networks:
        import tensorflow as tf

        split = self.device.split_batch

        def unet(latents, t_emb, contexts):
            return tf.cast(diffusion_model([latents, t_emb, contexts], training=False), tf.float32)

        def step(latents, t_emb, contexts, guidance_scale):
            if split:
                rows = range(latents.shape[0])  # static: traced per batch size
                noise = tf.concat(
                    [unet(latents[i : i + 1], t_emb[i : i + 1], contexts[i : i + 1]) for i in rows],
                    axis=0,
                )
            else:
                noise = unet(latents, t_emb, contexts)
            if guidance_scale is None:
                return noise
            unconditional, conditional = tf.split(noise, 2)
            return unconditional + guidance_scale * (conditional - unconditional)

        compiled_step = self._function(step)

        def denoise(latents, t_emb, contexts, guidance_scale):
            if guidance_scale is None and not split:
                return _call_padded(compiled_step, latents, t_emb, contexts, None)
            return np.asarray(compiled_step(latents, t_emb, contexts, guidance_scale))

        def decode(latents):
            return tf.cast(decoder(latents, training=False), tf.float32)

        compiled_decode = self._function(decode)
        return Networks(denoise, lambda latents: np.asarray(compiled_decode(latents)))

    def _function(self, fn):
        import tensorflow as tf

        return tf.function(fn, jit_compile=self.device.xla)


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
    padded = [a if a is None else np.concatenate([a, a]) for a in arrays]
    return np.asarray(fn(*padded))[:batch]


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, MemoryError):
        return True
    tf = sys.modules.get("tensorflow")  # never imported just to look at an error
    return tf is not None and isinstance(error, tf.errors.ResourceExhaustedError)
