"""The ``Pipeline``: encode the prompts, draw latents (or start from an image), denoise,
decode; every task, txt2img, img2img, inpainting and hires fix, goes through it.

A ``Pipeline`` only receives built networks (or any runtime's backend, see
:mod:`sdgen.runtimes.base`); :func:`sdgen.pipeline.loading.load_pipeline` resolves
weights and builds them. Each stage is its own step here: the text stage gives one
``Conditioning`` (:mod:`sdgen.text.conditioning`), guidance is combined by
:mod:`.guidance`, and latents and pixels come from :mod:`.stages`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from ..config import AUTO_BATCH, GenerationConfig
from ..errors import ConfigError, OutOfMemoryError
from ..families import family_of
from ..networks.text_states import check_clip_skip
from ..noise import LatentNoise
from ..noise.variation import starting_noise
from ..runtimes.signature import NetworkSignature
from ..runtimes.tensorflow import DeviceSettings, TensorFlowBackend, is_out_of_memory
from ..samplers import get_sampler
from ..spec import ModelSpec
from ..text.conditioning import Conditioning, TextOptions, encode_conditioning
from .guidance import predict_noise
from .inpaint import filled
from .plan import base_size, plan_size, task_notes
from .stages import decode_image, timestep_embedding
from .start import hires_start, steps_of_passes, task_start

#: Called as ``callback(image_index, step_index, steps, latents)`` after every step.
StepCallback = Callable[[int, int, int, np.ndarray], None]


@dataclass(frozen=True)
class GeneratedImage:
    """One finished image: ``pixels`` is (height, width, 3) uint8."""

    index: int
    seed: int
    pixels: np.ndarray
    seconds: float = 0.0


class Pipeline:
    """Stable Diffusion text-to-image over keras_cv networks. Load once, generate often.

    ``text_encoder``, ``diffusion_model`` and ``decoder`` are built keras_cv models (or
    models with the same inputs and outputs), run by the TensorFlow runtime; ``tokenizer``
    has CLIP's ``encode(text) -> ids`` (sdgen's ``ClipTokenizer`` or keras_cv's
    ``SimpleTokenizer``). Networks for other image sizes and context lengths run the
    same layers, so they share the weights in memory; nothing is read from disk again.
    ``Pipeline.with_backend`` takes any runtime's backend instead (see
    :mod:`sdgen.runtimes.base`).
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
        """A pipeline whose networks run on ``backend`` (a ``runtimes.base.Backend``)."""
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
        #: where prompts find textual-inversion embeddings by name (None: nowhere); an
        #: ``sdgen.adapters.textual_inversion.EmbeddingLibrary``, set by ``load_pipeline``
        self.embeddings = None
        #: where ``config.loras`` and ``<lora:...>`` tags find LoRAs: a
        #: ``sdgen.adapters.lora.uses.LoraFinder``, set by ``load_pipeline`` (None: the default
        #: folder, ``$SDGEN_HOME/loras``)
        self.loras = None
        #: what is merged into the backend's weights now: ``(path, sha256, te, unet)`` of
        #: each LoRA; None when unknown (a merge failed part-way), so the next job merges
        self._merged: tuple | None = ()

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
        conditioning: Conditioning | None = None,
    ) -> Iterator[GeneratedImage]:
        """Yield the images of ``config`` as each batch finishes, so none is lost if a
        later batch fails. Image k uses seed ``config.seed + k`` and is identical
        whatever ``config.batch_size`` is, so ``only`` (a list of image numbers k) can
        make just the images a resumed run still lacks. ``config.seed`` must be set.
        ``conditioning`` replaces the text stage's encoding of ``config``'s prompts
        (:meth:`encode`), for text states made another way.

        ``batch_size="auto"`` asks the backend how many images its free memory holds
        (``auto_batch_size``) and halves the batch whenever denoising runs out of memory
        anyway, so an estimate that was too high costs a retry, not the run."""
        if config.seed is None:
            raise ConfigError("config.seed must be set; use config.with_defaults()")
        width, height = base_size(self.spec, config)
        target = plan_size(self.spec, config) if config.hires else None
        sampler = get_sampler(config.sampler)
        wanted = list(range(config.num_images)) if only is None else sorted(only)
        auto = config.batch_size == AUTO_BATCH
        size = self.auto_batch_size(height, width) if auto else config.batch_size
        try:
            # 0. merge the LoRAs this config asks for (when they are not merged already)
            self.use_loras(config)
            # 1. encode prompt: negative and positive text states
            if conditioning is None:
                options = TextOptions(config.emphasis, config.clip_skip)
                conditioning = self.encode(config.negative_prompt, config.prompt, options)
            # 1b. an image task's start: the encoded init image (and mask), once
            start = task_start(self.backend, self.family, config, width, height)
            passes = steps_of_passes(config, start)
            start_step = 0
            while start_step < len(wanted):
                began = time.perf_counter()
                indices = wanted[start_step : start_step + size]
                # 2. initial latents, one generator per image
                generators = [LatentNoise(config.rng, config.seed + k) for k in indices]
                latents = np.stack(
                    [
                        starting_noise(
                            generator,
                            height,
                            width,
                            None if config.subseed is None else config.subseed + k,
                            config.subseed_strength,
                            config.seed_resize_from,
                        )
                        for generator, k in zip(generators, indices, strict=True)
                    ]
                )
                # 3. denoise (and hires fix's second pass)
                try:
                    progress = _Progress(callback, indices, sum(passes))
                    latents = self._denoise(
                        sampler, latents, generators, conditioning, config, progress, start
                    )
                    if target is not None:
                        latents = self._hires(
                            sampler, latents, conditioning, config, indices, progress, target
                        )
                except Exception as error:
                    if not (auto and len(indices) > 1 and is_out_of_memory(error)):
                        raise
                    size = len(indices) // 2
                    self._auto_sizes[(height, width)] = size
                    continue  # the same images again, in smaller batches
                start_step += len(indices)
                # 4. decode, one image at a time
                out_width, out_height = target or (width, height)
                networks = self.backend.networks(
                    self._signature(out_height, out_width, conditioning.positive_length)
                )
                share = (time.perf_counter() - began) / len(indices)
                for k, latent in zip(indices, latents, strict=True):
                    decode_began = time.perf_counter()
                    pixels = self._decode(networks, latent, start)
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

    def notes(self, config: GenerationConfig) -> list[str]:
        """See :func:`.plan.task_notes`."""
        return task_notes(self.spec, config)

    def use_loras(self, config: GenerationConfig) -> None:
        """Merge into the networks' weights the LoRAs ``config`` asks for (its ``loras``
        and its prompt's ``<lora:...>`` tags; see :mod:`sdgen.adapters.lora.uses`), in place of
        those merged for an earlier config. Nothing is done when the set is the one
        already merged, so the jobs of a prompts file that share LoRAs merge once; a
        config with none after one with some restores the weights (``{}``). The
        checkpoint is never read again: the backend keeps a copy of the tensors a merge
        touches (``set_weight_deltas``). A LoRA of weight 0 is left out: it changes
        nothing. ``LoraError`` when a LoRA cannot be found or used, or the runtime
        cannot merge."""
        from ..adapters.lora.uses import LoraFinder, check_family, requested

        wanted = [r for r in requested(config) if r.te or r.unet]
        if not wanted and self._merged == ():
            return
        if self.loras is None:
            self.loras = LoraFinder()
        files = [(self.loras.load(r.name), r.te, r.unet) for r in wanted]
        key = tuple((str(f.path), f.sha256, te, unet) for f, te, unet in files)
        if key == self._merged:
            return
        from ..adapters.lora import LoraError, lora_deltas

        set_weight_deltas = getattr(self.backend, "set_weight_deltas", None)
        if set_weight_deltas is None:
            raise LoraError(f"LoRAs need the TensorFlow runtime for now ({self.device.runtime})")
        for lora, _, _ in files:
            check_family(lora, self.family)
        deltas = lora_deltas(files, self.family.name, self.family.widths) if files else {}
        self._merged = None  # unknown until the backend has taken every delta
        set_weight_deltas(deltas)
        self._merged = key

    def auto_batch_size(self, height: int, width: int) -> int:
        """The batch ``--batch-size auto`` uses at this size: the backend's estimate, or
        the size that last fitted after a batch ran out of memory."""
        if (height, width) not in self._auto_sizes:
            estimate = getattr(self.backend, "auto_batch_size", None)
            self._auto_sizes[(height, width)] = estimate(height, width) if estimate else 1
        return self._auto_sizes[(height, width)]

    def encode(
        self, negative_prompt: str, prompt: str, options: TextOptions | None = None
    ) -> Conditioning:
        """The text stage: both prompts' states, (1, 77·k, C) each for k chunks, with
        ``options``' emphasis and clip skip and this pipeline's ``embeddings``."""
        options = options or TextOptions()
        check_clip_skip(options.clip_skip, self.family.widths.text_layers)
        return encode_conditioning(
            self.tokenizer,
            self.backend.encode,
            negative_prompt,
            prompt,
            self.family.pad_token,
            options,
            self.embeddings,
            self.family.widths.text,
        )

    def _signature(self, height: int, width: int, context_length: int) -> NetworkSignature:
        return NetworkSignature(height, width, context_length, self.family.in_channels)

    def _denoise(self, sampler, noise, generators, conditioning, config, progress, start=None):
        """Denoise B rows from their unit ``noise``: from pure noise (txt2img) or from
        ``start``'s image, noised to its first step's level."""
        steps = config.steps if start is None else start.steps
        first = 0 if start is None else start.start_index
        run = sampler.start(steps, self.spec.prediction_type, first)
        batch, h, w = noise.shape[:3]
        height, width = h * 8, w * 8
        x0 = None
        if start is None or start.latents is None:
            latents = noise * np.float32(run.init_noise_sigma)
        else:
            x0 = start.latents
            if x0.ndim == 3:  # one image's, shared by the batch
                x0 = np.repeat(x0[None], batch, 0)
            fill = None
            if start.fill == "noise":
                fill = np.stack([g.draw(height, width) for g in generators])
            latents = run.add_noise(filled(x0, start, fill), noise)
        extra = None
        if start is not None and start.extra is not None:
            extra = np.repeat(start.extra[None], batch, 0).astype(np.float32)
        keep = None if start is None or start.keep is None else start.keep[None].astype(np.float32)
        scale = None if config.guidance_scale == 1.0 else config.guidance_scale
        t_dim = self.family.timestep_embedding_dim

        def networks(context_length: int):
            return self.backend.networks(self._signature(height, width, context_length))

        last = len(run.timesteps) - 1
        for index, timestep in enumerate(run.timesteps):
            model_input = run.scale_model_input(latents, index)
            if extra is not None:
                model_input = np.concatenate([model_input, extra], axis=-1)
            t_emb = np.repeat(timestep_embedding(timestep, t_dim)[None], batch, 0)
            output = predict_noise(networks, model_input, t_emb, conditioning, scale)
            step_noise = None
            if run.needs_noise:
                step_noise = np.stack([g.draw(height, width) for g in generators])
            latents = run.step(np.asarray(output), index, latents, step_noise)
            if keep is not None:  # put the kept region back, at the next step's level
                known = x0 if index == last else run.add_noise(x0, noise, index + 1)
                latents = (keep * known + (1.0 - keep) * latents).astype(np.float32)
            progress(latents)
        return latents

    def _hires(self, sampler, latents, conditioning, config, indices, progress, target):
        """Hires fix's second pass: ``latents`` of the first enlarged to ``target``
        (width, height) by ``config.hires_upscaler``, then img2img there from fresh
        noise of each image's seed (see :mod:`.hires`)."""
        target_w, target_h = target
        decoder = None
        if not config.hires_upscaler.startswith("latent"):  # decoded, enlarged, encoded
            height, width = latents.shape[1] * 8, latents.shape[2] * 8
            decoder = self.backend.networks(
                self._signature(height, width, conditioning.positive_length)
            )
        start = hires_start(self.backend, self.family, config, latents, target, decoder)
        generators = [LatentNoise(config.rng, config.seed + k) for k in indices]
        noise = np.stack([g.draw(target_h, target_w) for g in generators])
        return self._denoise(sampler, noise, generators, conditioning, config, progress, start)

    def _decode(self, networks, latent: np.ndarray, start=None, refuse_black=None) -> np.ndarray:
        """One image's pixels (see :func:`.stages.decode_image`)."""
        return decode_image(networks, latent, start, refuse_black)


class _Progress:
    """The step callback of one batch across its passes: ``callback(k, step, steps,
    latents)`` with the steps counted over both of hires fix's passes."""

    def __init__(self, callback: StepCallback | None, indices: list[int], total: int):
        self.callback, self.indices, self.total, self.step = callback, indices, total, 0

    def __call__(self, latents: np.ndarray) -> None:
        if self.callback is not None:
            for row, k in enumerate(self.indices):
                self.callback(k, self.step, self.total, latents[row])
        self.step += 1


__all__ = ["GeneratedImage", "Pipeline", "StepCallback"]
