"""The text-to-image pipeline: encode the prompt, denoise, decode, with injected networks.

``load_pipeline()`` resolves weights (through :mod:`sdgen.weights`) and builds the
networks (through :mod:`sdgen.models`); a ``Pipeline`` itself only receives built
networks, so it can be given any keras_cv-compatible models.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import models
from .config import GenerationConfig
from .errors import BadImageError, OutOfMemoryError
from .registry import ROLES, ModelSpec, get_model_spec
from .samplers import get_sampler
from .tokenizer import END_OF_TEXT, encode_prompt, load_tokenizer

#: The padding token of each family's tokenizer: SD 2.x's OpenCLIP pads with 0 where
#: CLIP (SD 1.x, keras_cv) repeats end-of-text (diffusers' SD 2 tokenizer config).
PAD_TOKENS = {"sd-v2": 0}

#: Called as ``callback(image_index, step_index, steps, latents)`` after every step.
StepCallback = Callable[[int, int, int, np.ndarray], None]


@dataclass(frozen=True)
class GeneratedImage:
    """One finished image: ``pixels`` is (height, width, 3) uint8."""

    index: int
    seed: int
    pixels: np.ndarray
    seconds: float = 0.0


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
    """

    xla: bool = False
    mixed_precision: bool = False
    split_batch: bool = True
    device: str = "CPU"


@dataclass
class _Networks:
    diffusion_model: object
    decoder: object
    denoise: Callable = field(repr=False)
    decode: Callable = field(repr=False)


def timestep_embedding(timestep: float, dim: int = models.TIMESTEP_EMBEDDING_DIM) -> np.ndarray:
    """The sinusoidal embedding of ``timestep`` that keras_cv's U-Net takes: cos then sin
    of ``timestep * 10000^(-i / (dim/2))`` for i in [0, dim/2)."""
    half = dim // 2
    freqs = np.exp(-math.log(10000.0) * np.arange(half, dtype=np.float64) / half)
    args = float(timestep) * freqs
    return np.concatenate([np.cos(args), np.sin(args)]).astype(np.float32)


def image_generator(seed: int) -> np.random.Generator:
    """The random generator of one image: PCG64 seeded with the image's seed. It draws
    the starting latents and then any per-step noise, so an image never depends on the
    others in its batch."""
    return np.random.Generator(np.random.PCG64(seed))


def initial_latents(seed: int, height: int, width: int) -> np.ndarray:
    """The unit starting noise of one image, (height/8, width/8, 4) standard normal: the
    first draw of its generator, the same on every machine and batch size."""
    return _draw(image_generator(seed), height, width)


def _draw(generator: np.random.Generator, height: int, width: int) -> np.ndarray:
    return generator.standard_normal((height // 8, width // 8, 4), dtype=np.float32)


class Pipeline:
    """Stable Diffusion text-to-image over keras_cv networks. Load once, generate often.

    ``text_encoder``, ``diffusion_model`` and ``decoder`` are built keras_cv models (or
    models with the same inputs and outputs); ``tokenizer`` is keras_cv's
    ``SimpleTokenizer``. Networks for other image sizes are rebuilt from ``spec`` and
    given the same weights in memory; nothing is read from disk again.
    """

    def __init__(
        self,
        spec: ModelSpec,
        tokenizer,
        text_encoder,
        diffusion_model,
        decoder,
        device: DeviceSettings | None = None,
    ):
        self.spec = spec
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.device = device or DeviceSettings()
        size = models.latent_size(diffusion_model)
        self._networks = {size: self._compile(diffusion_model, decoder)}
        self._encode = self._function(lambda tokens, positions: text_encoder([tokens, positions]))

    @property
    def diffusion_model(self):
        """The U-Net at the size the pipeline was loaded for."""
        return next(iter(self._networks.values())).diffusion_model

    @property
    def decoder(self):
        """The VAE decoder at the size the pipeline was loaded for."""
        return next(iter(self._networks.values())).decoder

    @property
    def model_name(self) -> str:
        return self.spec.name

    def generate(
        self, config: GenerationConfig, callback: StepCallback | None = None
    ) -> list[GeneratedImage]:
        """All ``config.num_images`` images of ``config``; see :meth:`generate_iter`."""
        return list(self.generate_iter(config, callback))

    def generate_iter(
        self,
        config: GenerationConfig,
        callback: StepCallback | None = None,
        only: list[int] | None = None,
    ) -> Iterator[GeneratedImage]:
        """Yield the images of ``config`` as each batch finishes, so none is lost if a
        later batch fails. Image k uses seed ``config.seed + k`` and is identical
        whatever ``config.batch_size`` is, so ``only`` (a list of image numbers k) can
        make just the images a resumed run still lacks. ``config.seed`` must be set."""
        if config.seed is None:
            raise ValueError("config.seed must be set; use config.with_defaults()")
        height = config.height or self.spec.default_size
        width = config.width or self.spec.default_size
        sampler = get_sampler(config.sampler)
        try:
            # 1. encode prompt: [negative, prompt] in one batch of two
            context = self.encode_prompts(config.negative_prompt, config.prompt)
            networks = self._networks_for(height, width)
            wanted = list(range(config.num_images)) if only is None else sorted(only)
            for start in range(0, len(wanted), config.batch_size):
                began = time.perf_counter()
                indices = wanted[start : start + config.batch_size]
                # 2. initial latents, one generator per image
                generators = [image_generator(config.seed + k) for k in indices]
                latents = np.stack([_draw(g, height, width) for g in generators])
                # 3. denoise
                latents = self._denoise(
                    networks, sampler, latents, generators, context, config, indices, callback
                )
                # 4. decode, one image at a time
                share = (time.perf_counter() - began) / len(indices)
                for k, latent in zip(indices, latents, strict=True):
                    decode_began = time.perf_counter()
                    pixels = self._decode(networks, latent)
                    seconds = share + time.perf_counter() - decode_began
                    yield GeneratedImage(k, config.seed + k, pixels, seconds)
        except Exception as error:
            if _is_out_of_memory(error):
                raise OutOfMemoryError(
                    f"ran out of memory at {width}x{height} with batch size "
                    f"{config.batch_size}; try --batch-size 1 or a smaller --width/--height"
                ) from error
            raise

    def encode_prompts(self, negative_prompt: str, prompt: str) -> np.ndarray:
        """Text-encoder states of (negative prompt, prompt), shape (2, 77, width)."""
        pad = PAD_TOKENS.get(self.spec.family, END_OF_TEXT)
        tokens = np.stack(
            [
                encode_prompt(self.tokenizer, negative_prompt, "negative prompt", pad),
                encode_prompt(self.tokenizer, prompt, pad=pad),
            ]
        )
        positions = np.tile(np.arange(models.MAX_PROMPT_LENGTH, dtype=np.int32), (2, 1))
        return np.asarray(self._encode(tokens, positions), dtype=np.float32)

    def _denoise(self, networks, sampler, latents, generators, context, config, indices, callback):
        run = sampler.start(config.steps, self.spec.prediction_type)
        height, width = latents.shape[1] * 8, latents.shape[2] * 8
        latents = latents * np.float32(run.init_noise_sigma)
        batch = len(latents)
        guided = config.guidance_scale != 1.0
        if guided:
            # one U-Net call on 2B rows: B unconditional, then B conditional
            contexts = np.concatenate(
                [np.repeat(context[:1], batch, 0), np.repeat(context[1:], batch, 0)]
            )
        else:
            contexts = np.repeat(context[1:], batch, 0)
        scale = np.float32(config.guidance_scale)
        for index, timestep in enumerate(run.timesteps):
            model_input = run.scale_model_input(latents, index)
            t_emb = np.repeat(timestep_embedding(timestep)[None], batch, 0)
            if guided:
                both = np.concatenate([model_input, model_input])
                output = networks.denoise(both, np.concatenate([t_emb, t_emb]), contexts, scale)
            elif self.device.split_batch:
                output = networks.denoise(model_input, t_emb, contexts, None)
            else:
                output = _call_padded(networks.denoise, model_input, t_emb, contexts, None)
            noise = None
            if run.needs_noise:
                noise = np.stack([_draw(g, height, width) for g in generators])
            latents = run.step(np.asarray(output), index, latents, noise)
            if callback is not None:
                for row, k in enumerate(indices):
                    callback(k, index, len(run.timesteps), latents[row])
        return latents

    def _decode(self, networks, latent: np.ndarray) -> np.ndarray:
        decoded = np.asarray(networks.decode(latent[None]), dtype=np.float32)[0]
        if not np.isfinite(decoded).all():
            raise BadImageError(
                "the networks produced NaN or infinite values, so no image was saved; "
                "with --mixed-precision this can be float16 overflow: try without it"
            )
        return np.clip(np.round((decoded + 1.0) * 127.5), 0, 255).astype(np.uint8)

    def _networks_for(self, height: int, width: int) -> _Networks:
        if (height, width) not in self._networks:
            current = next(iter(self._networks.values()))
            diffusion_model = models.build_diffusion_model(self.spec, height, width)
            diffusion_model.set_weights(current.diffusion_model.get_weights())
            decoder = models.build_decoder(self.spec, height, width)
            decoder.set_weights(current.decoder.get_weights())
            self._networks[(height, width)] = self._compile(diffusion_model, decoder)
        return self._networks[(height, width)]

    def _compile(self, diffusion_model, decoder) -> _Networks:
        import tensorflow as tf

        def unet(latents, t_emb, contexts):
            return tf.cast(diffusion_model([latents, t_emb, contexts], training=False), tf.float32)

        def denoise(latents, t_emb, contexts, guidance_scale):
            if self.device.split_batch:
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

        def decode(latents):
            return tf.cast(decoder(latents, training=False), tf.float32)

        return _Networks(diffusion_model, decoder, self._function(denoise), self._function(decode))

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
        return fn(*arrays)
    padded = [a if a is None else np.concatenate([a, a]) for a in arrays]
    return np.asarray(fn(*padded))[:batch]


def _is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, MemoryError):
        return True
    try:
        import tensorflow as tf
    except ImportError:  # pragma: no cover
        return False
    return isinstance(error, tf.errors.ResourceExhaustedError)


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
    )


def load_pipeline(
    model: str | ModelSpec = "sd-v1.4",
    *,
    weights_dir: str | Path | None = None,
    offline: bool = False,
    width: int | None = None,
    height: int | None = None,
    xla: bool | None = None,
    mixed_precision: bool | None = None,
    download_progress=None,
) -> Pipeline:
    """Resolve the weights of ``model`` and build its networks.

    model: a model name (``sd-v1.4``, ``tiny``) or a ``ModelSpec``.
    weights_dir: a folder holding ``kcv_encoder.h5``, ``kcv_diffusion_model.h5`` and
        ``kcv_decoder.h5``; without it, files come from the caches or are downloaded.
    offline: never download; raise ``WeightsError`` naming the missing file instead.
    width, height: the size to build the networks for first [the model's default].
    xla, mixed_precision: None picks what suits the device (see ``detect_device``).
    """
    from .weights import resolve_weights

    spec = model if isinstance(model, ModelSpec) else get_model_spec(model)
    paths = resolve_weights(
        spec,
        Path(weights_dir) if weights_dir is not None else None,
        offline=offline,
        progress=download_progress,
    )
    device = detect_device(xla, mixed_precision)
    import keras

    keras.mixed_precision.set_global_policy(
        "mixed_float16" if device.mixed_precision else "float32"
    )
    height = height or spec.default_size
    width = width or spec.default_size
    networks = {}
    for role in ROLES:
        network = models.BUILDERS[role](spec, height, width)
        if role in paths:
            models.load_weights(network, paths[role])
        networks[role] = network
    return Pipeline(
        spec,
        load_tokenizer(),
        networks["text_encoder"],
        networks["diffusion_model"],
        networks["decoder"],
        device,
    )


__all__ = [
    "DeviceSettings",
    "GeneratedImage",
    "Pipeline",
    "detect_device",
    "initial_latents",
    "load_pipeline",
    "timestep_embedding",
]
