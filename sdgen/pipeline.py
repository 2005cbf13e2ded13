"""The text-to-image pipeline: encode the prompt, denoise, decode, with injected networks.

``load_pipeline()`` resolves weights (through :mod:`sdgen.weights`) and builds the
networks (through :mod:`sdgen.families`); a ``Pipeline`` itself only receives built
networks, so it can be given any keras_cv-compatible models.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .catalog import get_model_spec
from .config import AUTO_BATCH, GenerationConfig
from .errors import BadImageError, ConfigError, OutOfMemoryError, UsageError
from .families import family_of
from .networks.h5 import load_weights
from .networks.layouts import MAX_PROMPT_LENGTH
from .runtimes import RUNTIMES
from .runtimes.tensorflow import DeviceSettings, TensorFlowBackend, detect_device, is_out_of_memory
from .samplers import get_sampler
from .spec import ROLES, ModelSpec
from .tokenizer import END_OF_TEXT, encode_prompt, load_tokenizer

#: Called as ``callback(image_index, step_index, steps, latents)`` after every step.
StepCallback = Callable[[int, int, int, np.ndarray], None]


@dataclass(frozen=True)
class GeneratedImage:
    """One finished image: ``pixels`` is (height, width, 3) uint8."""

    index: int
    seed: int
    pixels: np.ndarray
    seconds: float = 0.0


def timestep_embedding(timestep: float, dim: int = 320) -> np.ndarray:
    """The sinusoidal embedding of ``timestep`` that keras_cv's U-Net takes: cos then sin
    of ``timestep * 10000^(-i / (dim/2))`` for i in [0, dim/2). ``dim`` is the family's
    ``timestep_embedding_dim`` (SD's: 320)."""
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
    models with the same inputs and outputs), run by the TensorFlow runtime; ``tokenizer``
    has CLIP's ``encode(text) -> ids`` (sdgen's ``ClipTokenizer`` or keras_cv's
    ``SimpleTokenizer``). Networks for other image sizes are rebuilt from
    ``spec`` and given the same weights in memory; nothing is read from disk again.
    ``Pipeline.with_backend`` takes any runtime's backend instead (see
    :mod:`sdgen.runtimes`).
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
        device = device or DeviceSettings()
        backend = TensorFlowBackend(spec, text_encoder, diffusion_model, decoder, device)
        self._setup(spec, tokenizer, backend, device)

    @classmethod
    def with_backend(cls, spec: ModelSpec, tokenizer, backend, device: DeviceSettings) -> Pipeline:
        """A pipeline whose networks run on ``backend`` (``encode``, ``networks``)."""
        pipeline = cls.__new__(cls)
        pipeline._setup(spec, tokenizer, backend, device)
        return pipeline

    def _setup(self, spec, tokenizer, backend, device) -> None:
        self.spec = spec
        self.family = family_of(spec)
        self.tokenizer = tokenizer
        self.backend = backend
        self.device = device
        self._auto_sizes: dict[tuple[int, int], int] = {}  # --batch-size auto, per size

    @property
    def text_encoder(self):
        """The Keras text encoder (TensorFlow runtime)."""
        return self.backend.text_encoder

    @property
    def diffusion_model(self):
        """The Keras U-Net at the size the pipeline was loaded for (TensorFlow runtime)."""
        return self.backend.diffusion_model

    @property
    def decoder(self):
        """The Keras VAE decoder at the size the pipeline was loaded for (TensorFlow runtime)."""
        return self.backend.decoder

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
        make just the images a resumed run still lacks. ``config.seed`` must be set.

        ``batch_size="auto"`` asks the backend how many images its free memory holds
        (``auto_batch_size``) and halves the batch whenever denoising runs out of memory
        anyway, so an estimate that was too high costs a retry, not the run."""
        if config.seed is None:
            raise ConfigError("config.seed must be set; use config.with_defaults()")
        height = config.height or self.spec.default_size
        width = config.width or self.spec.default_size
        sampler = get_sampler(config.sampler)
        wanted = list(range(config.num_images)) if only is None else sorted(only)
        auto = config.batch_size == AUTO_BATCH
        size = self.auto_batch_size(height, width) if auto else config.batch_size
        try:
            # 1. encode prompt: [negative, prompt] in one batch of two
            context = self.encode_prompts(config.negative_prompt, config.prompt)
            networks = self.backend.networks(height, width)
            start = 0
            while start < len(wanted):
                began = time.perf_counter()
                indices = wanted[start : start + size]
                # 2. initial latents, one generator per image
                generators = [image_generator(config.seed + k) for k in indices]
                latents = np.stack([_draw(g, height, width) for g in generators])
                # 3. denoise
                try:
                    latents = self._denoise(
                        networks, sampler, latents, generators, context, config, indices, callback
                    )
                except Exception as error:
                    if not (auto and len(indices) > 1 and is_out_of_memory(error)):
                        raise
                    size = len(indices) // 2
                    self._auto_sizes[(height, width)] = size
                    continue  # the same images again, in smaller batches
                start += len(indices)
                # 4. decode, one image at a time
                share = (time.perf_counter() - began) / len(indices)
                for k, latent in zip(indices, latents, strict=True):
                    decode_began = time.perf_counter()
                    pixels = self._decode(networks, latent)
                    seconds = share + time.perf_counter() - decode_began
                    yield GeneratedImage(k, config.seed + k, pixels, seconds)
        except Exception as error:
            if is_out_of_memory(error):
                chosen = " (chosen by --batch-size auto)" if auto else ""
                raise OutOfMemoryError(
                    f"ran out of memory at {width}x{height} with batch size {size}{chosen}; "
                    "try --batch-size 1 or a smaller --width/--height"
                ) from error
            raise

    def auto_batch_size(self, height: int, width: int) -> int:
        """The batch ``--batch-size auto`` uses at this size: the backend's estimate, or
        the size that last fitted after a batch ran out of memory."""
        if (height, width) not in self._auto_sizes:
            estimate = getattr(self.backend, "auto_batch_size", None)
            self._auto_sizes[(height, width)] = estimate(height, width) if estimate else 1
        return self._auto_sizes[(height, width)]

    def encode_prompts(self, negative_prompt: str, prompt: str) -> np.ndarray:
        """Text-encoder states of (negative prompt, prompt), shape (2, 77, width)."""
        pad = END_OF_TEXT if self.family.pad_token is None else self.family.pad_token
        tokens = np.stack(
            [
                encode_prompt(self.tokenizer, negative_prompt, "negative prompt", pad),
                encode_prompt(self.tokenizer, prompt, pad=pad),
            ]
        )
        positions = np.tile(np.arange(MAX_PROMPT_LENGTH, dtype=np.int32), (2, 1))
        return self.backend.encode(tokens, positions)

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
        t_dim = self.family.timestep_embedding_dim
        for index, timestep in enumerate(run.timesteps):
            model_input = run.scale_model_input(latents, index)
            t_emb = np.repeat(timestep_embedding(timestep, t_dim)[None], batch, 0)
            if guided:
                both = np.concatenate([model_input, model_input])
                output = networks.denoise(both, np.concatenate([t_emb, t_emb]), contexts, scale)
            else:
                output = networks.denoise(model_input, t_emb, contexts, None)
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
        pixels = np.clip(np.round((decoded + 1.0) * 127.5), 0, 255).astype(np.uint8)
        if not pixels.any():
            # what float16 underflow or a broken conversion gives; no real decode is
            # exactly black everywhere (the VAE always leaves some texture)
            raise BadImageError(
                "the networks produced an all-black image, so it was not saved; "
                "with --mixed-precision this can be float16 underflow: try without it"
            )
        return pixels


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
    runtime: str = "tensorflow",
) -> Pipeline:
    """Resolve the weights of ``model`` and build its networks.

    model: a model name (``sd-v1.4``, ``tiny``) or a ``ModelSpec``.
    weights_dir: a folder holding ``kcv_encoder.h5``, ``kcv_diffusion_model.h5`` and
        ``kcv_decoder.h5``; without it, files come from the caches or are downloaded.
    offline: never download; raise ``WeightsError`` naming the missing file instead.
    width, height: the size to build the networks for first [the model's default].
    xla, mixed_precision: None picks what suits the device (see ``detect_device``);
        TensorFlow runtime only.
    runtime: ``tensorflow`` or ``openvino`` (see :mod:`sdgen.runtimes`).
    """
    from .weights import resolve_weights

    if runtime not in RUNTIMES:  # before any weight is resolved, let alone downloaded
        raise UsageError(f"unknown runtime {runtime!r}; choose one of: {', '.join(RUNTIMES)}")
    spec = model if isinstance(model, ModelSpec) else get_model_spec(model)
    paths = resolve_weights(
        spec,
        Path(weights_dir) if weights_dir is not None else None,
        offline=offline,
        progress=download_progress,
    )
    height = height or spec.default_size
    width = width or spec.default_size

    family = family_of(spec)

    def build(role: str, height: int, width: int):
        network = family.build(role, spec, height, width)
        if role in paths:
            load_weights(network, paths[role])
        return network

    if runtime == "openvino":
        from .runtimes.openvino import OpenVinoBackend, check_options, default_folder

        check_options(xla, mixed_precision)

        backend = OpenVinoBackend(spec, default_folder(spec, paths), build)
        backend.networks(height, width)  # convert or load the U-Net and decoder now
        device = DeviceSettings(device="CPU", runtime="openvino")
        return Pipeline.with_backend(spec, load_tokenizer(), backend, device)

    device = detect_device(xla, mixed_precision)
    import keras

    keras.mixed_precision.set_global_policy(
        "mixed_float16" if device.mixed_precision else "float32"
    )
    networks = {role: build(role, height, width) for role in ROLES}
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
