"""Generation settings: a frozen, validated dataclass, and presets loaded from TOML.

Precedence is built-in defaults < preset (``--config``) < explicit flags. A
``GenerationConfig`` checks its values when it is built, so a bad value gets the same
message from the CLI, a prompts file or Python.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from .errors import ConfigError, PromptError
from .images import ImageInput
from .noise import DEFAULT_RNG, check_rng
from .samplers.run import check_strength
from .text.lora_tags import LoraRequest, lora_requests, lora_tags
from .text.prompt_syntax import DEFAULT_EMPHASIS, EMPHASIS_LABELS, EMPHASIS_MODES

#: Largest seed accepted, as in AUTOMATIC1111 (seeds are unsigned 32-bit there).
MAX_SEED = 2**32 - 1
#: The seed that asks for a random one, as in AUTOMATIC1111 (the same as leaving it unset).
RANDOM_SEED = -1
#: The U-Net downsamples the 1/8-size latent three times, so sizes are multiples of 64.
SIZE_MULTIPLE = 64
MAX_SIZE = 4096
#: SD models are trained on 1000 noise levels; more steps than that repeat timesteps.
MAX_STEPS = 1000
#: ``batch_size`` that lets the backend choose from free memory
AUTO_BATCH = "auto"
#: The default sampler and steps: DPM-Solver++(2M) on Karras noise levels is close to
#: converged by 20-25 steps on SD-class models (Lu et al. 2022; Karras et al. 2022), as in
#: AUTOMATIC1111's default "DPM++ 2M Karras", in half the U-Net calls of keras_cv's DDIM 50
#: (kept as the ``keras-cv`` preset). ``benchmarks/convergence.py`` measures it.
DEFAULT_SAMPLER = "dpmpp-2m-karras"
DEFAULT_STEPS = 25
#: How an init image of another size is brought to the requested one (see
#: :mod:`sdgen.images`): ``crop`` scales it to cover the size and cuts the overflow
#: evenly (A1111's "Crop and resize"), ``fit`` scales it to fit inside and fills the
#: border from its edges ("Resize and fill"), ``stretch`` scales each side on its own
#: ("Just resize", A1111's default). sdgen's default is ``crop``: it neither distorts
#: the picture nor invents any of it.
RESIZE_MODES = ("crop", "fit", "stretch")
#: What the masked region starts from in inpainting: the init image (``original``,
#: A1111's default), fresh noise (``noise``, A1111's "latent noise") or zero latents
#: (``latent-nothing``).
INPAINT_FILLS = ("original", "noise", "latent-nothing")
#: ``full``: the whole picture is denoised; ``masked``: a region around the mask is cut
#: out, denoised at the full requested size and pasted back (A1111's "Only masked").
INPAINT_AREAS = ("full", "masked")
#: How hires fix enlarges the first pass: in latent space, bilinear (``latent``, A1111's
#: "Latent") or nearest (``latent-nearest``), or in pixels with Lanczos (``lanczos``:
#: decode, enlarge, encode again).
HIRES_UPSCALERS = ("latent", "latent-nearest", "lanczos")
#: A1111's labels of sdgen's ``resize`` modes (its img2img "Resize mode").
RESIZE_LABELS = {"crop": "Crop and resize", "fit": "Resize and fill", "stretch": "Just resize"}
#: A1111's ``Masked content`` of sdgen's ``inpaint_fill`` (``original``, A1111's default,
#: is not written).
FILL_LABELS = {"original": "original", "noise": "latent noise", "latent-nothing": "latent nothing"}
#: A1111's ``Hires upscaler`` names of sdgen's ``hires_upscaler``.
UPSCALER_LABELS = {"latent": "Latent", "latent-nearest": "Latent (nearest)", "lanczos": "Lanczos"}


@dataclass(frozen=True)
class GenerationConfig:
    """One text-to-image request.

    prompt: what to draw; must not be empty. Any length: prompts longer than CLIP's 75
        tokens are encoded in chunks (see :mod:`sdgen.text.chunks`), and A1111's
        ``(word:1.2)`` emphasis syntax applies (see ``emphasis``).
    negative_prompt: what to steer away from ("" = unconditional).
    steps: denoising steps, 1 to 1000 [``DEFAULT_STEPS``, 25].
    guidance_scale: classifier-free guidance scale, a finite number >= 0 [7.5];
        1 disables guidance (the unconditional pass is skipped).
    width, height: image size in pixels, multiples of 64 [None = the model's default].
    seed: seed of image 0; image k uses ``seed + k`` [None = chosen at random]; -1 is
        taken for None, as in AUTOMATIC1111.
    num_images: images to make for this prompt [1].
    batch_size: images denoised together [1]; it changes speed and memory, never pixels.
        ``"auto"``: as many as the free memory holds (see ``Pipeline.generate_iter``).
    sampler: a sampler name (``ddim``, ``euler``, ``euler-a``, ``dpmpp-2m``,
        ``dpmpp-2m-karras``), its AUTOMATIC1111 label, or a sampler object
        [``DEFAULT_SAMPLER``, ``dpmpp-2m-karras``; ``--config keras-cv`` gives keras_cv's
        ``ddim`` at 50 steps].
    emphasis: how ``(word:1.2)`` weights are applied: ``original``, ``no-norm``,
        ``ignore``, or ``off`` (brackets are plain text) [``original``]; A1111's labels
        (``Original``, ``No norm``, ``Ignore``, ``None``) are accepted too.
    clip_skip: A1111's "Clip skip": 1 uses the text encoder's last layer, 2 the one
        before it, ... [1]; the largest value is the model's (12 for SD 1.x).
    rng: where the noise comes from (:mod:`sdgen.noise`): ``sdgen`` (NumPy's PCG64),
        ``torch-cpu`` (``torch.randn`` on a CPU, as ComfyUI and diffusers draw it) or
        ``torch-cuda`` (``torch.randn`` on a CUDA GPU, A1111's default) [``sdgen``];
        A1111's ``CPU``/``GPU``/``NV`` and stable-diffusion.cpp's ``cuda`` are taken too.
    subseed, subseed_strength: A1111's variation seed: the starting noise is the slerp
        of the seed's noise and ``subseed``'s (image k: ``subseed + k``),
        ``subseed_strength`` of the way, in [0, 1] [None, 0: no variation].
    seed_resize_from: A1111's "Resize seed from": ``(width, height)`` (or ``"WxH"``) to
        draw the noise at and centre in the image, keeping a seed's composition at a new
        size [None].
    loras: the LoRAs to merge (``LoraRequest``s; ``"name:0.8"`` strings and
        ``{"name": ..., "weight": ...}`` mappings are taken too), besides those the
        prompt's ``<lora:name:0.8>`` tags ask for [none] (see :mod:`sdgen.text.lora_tags`).
    init_image: the image to start from (img2img), an ``ImageInput`` or anything
        ``ImageInput.of`` reads: a path, a PIL image or a uint8 NumPy array [None:
        txt2img].
    strength: img2img's denoising strength in (0, 1]: how much of the schedule is run
        from the noised init image [0.75].
    resize: how an init image of another size is brought to ``width`` x ``height``, one
        of ``RESIZE_MODES`` [``crop``].
    mask: with ``init_image``, what to repaint (inpainting): white is repainted, black
        kept [None].
    mask_blur: the mask's blur radius in pixels [4, A1111's].
    inpaint_fill: what the masked region starts from, one of ``INPAINT_FILLS``
        [``original``].
    inpaint_area: ``full`` or ``masked`` (``INPAINT_AREAS``) [``full``];
        ``inpaint_padding``: the pixels around the mask that ``masked`` takes [32].
    outpaint: with ``init_image``, ``(left, top, right, bottom)`` pixels to add around
        it (or ``"L,T,R,B"``); the border is painted, the image kept [None].
    hires: run hires fix: txt2img at ``width`` x ``height``, enlarged ``hires_scale``
        times [2] with ``hires_upscaler`` (``HIRES_UPSCALERS``) [``latent``], then
        ``hires_steps`` [None: ``steps``] of img2img at ``hires_denoise`` [0.7].
    """

    prompt: str
    negative_prompt: str = ""
    steps: int = DEFAULT_STEPS
    guidance_scale: float = 7.5
    width: int | None = None
    height: int | None = None
    seed: int | None = None
    num_images: int = 1
    batch_size: int | str = 1
    sampler: str | object = DEFAULT_SAMPLER
    emphasis: str = DEFAULT_EMPHASIS
    clip_skip: int = 1
    rng: str = DEFAULT_RNG
    subseed: int | None = None
    subseed_strength: float = 0.0
    seed_resize_from: tuple[int, int] | None = None
    loras: tuple[LoraRequest, ...] = ()
    init_image: ImageInput | None = None
    strength: float = 0.75
    resize: str = "crop"
    mask: ImageInput | None = None
    mask_blur: int = 4
    inpaint_fill: str = "original"
    inpaint_area: str = "full"
    inpaint_padding: int = 32
    outpaint: tuple[int, int, int, int] | None = None
    hires: bool = False
    hires_scale: float = 2.0
    hires_upscaler: str = "latent"
    hires_steps: int | None = None
    hires_denoise: float = 0.7

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise PromptError("the prompt is empty; say what the image should show")
        if not isinstance(self.negative_prompt, str):
            raise ConfigError("negative_prompt must be a string")
        _check_int("steps", self.steps, minimum=1, maximum=MAX_STEPS)
        if isinstance(self.guidance_scale, bool) or not isinstance(
            self.guidance_scale, int | float
        ):
            raise ConfigError(f"guidance scale must be a number, got {self.guidance_scale!r}")
        if not math.isfinite(self.guidance_scale) or self.guidance_scale < 0:
            raise ConfigError(
                f"guidance scale must be a finite number >= 0, got {self.guidance_scale}"
            )
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is None:
                continue
            _check_int(name, value, minimum=SIZE_MULTIPLE, maximum=MAX_SIZE)
            if value % SIZE_MULTIPLE:
                lower = value // SIZE_MULTIPLE * SIZE_MULTIPLE
                raise ConfigError(
                    f"{name} {value} is not a multiple of {SIZE_MULTIPLE}, which the U-Net "
                    f"needs; use {max(lower, SIZE_MULTIPLE)} or {lower + SIZE_MULTIPLE}"
                )
        _check_int("num_images", self.num_images, minimum=1)
        if isinstance(self.batch_size, str) and self.batch_size != AUTO_BATCH:
            raise ConfigError(
                f"batch size must be a whole number or '{AUTO_BATCH}', got {self.batch_size!r}"
            )
        if self.batch_size != AUTO_BATCH:
            _check_int("batch_size", self.batch_size, minimum=1)
        self._check_seed()
        from .samplers import get_sampler

        get_sampler(self.sampler)
        self._check_text_settings()
        self._check_noise()
        object.__setattr__(self, "loras", lora_requests(self.loras))
        lora_tags(self.prompt)  # a tag's bad weight is refused here, like a bad --lora
        self._check_image_input()
        self._check_hires()

    @property
    def image_task(self) -> str:
        """``txt2img``, ``img2img``, ``inpaint`` or ``outpaint``: what the request does."""
        if self.init_image is None:
            return "txt2img"
        if self.outpaint is not None:
            return "outpaint"
        return "inpaint" if self.mask is not None else "img2img"

    def _check_image_input(self) -> None:
        if self.init_image is not None:
            object.__setattr__(self, "init_image", ImageInput.of(self.init_image, "init image"))
        if self.mask is not None:
            if self.init_image is None:
                raise ConfigError("--mask needs --init-image: the image whose region it repaints")
            object.__setattr__(self, "mask", ImageInput.of(self.mask, "mask"))
        check_strength(self.strength)
        object.__setattr__(self, "strength", float(self.strength))
        _check_choice("resize", self.resize, RESIZE_MODES)
        _check_int("mask_blur", self.mask_blur, minimum=0, maximum=256)
        _check_choice("inpaint fill", self.inpaint_fill, INPAINT_FILLS)
        _check_choice("inpaint area", self.inpaint_area, INPAINT_AREAS)
        _check_int("inpaint_padding", self.inpaint_padding, minimum=0, maximum=MAX_SIZE)
        if self.outpaint is not None:
            if self.init_image is None:
                raise ConfigError("--outpaint needs --init-image: the image to extend")
            if self.mask is not None:
                raise ConfigError("--outpaint makes its own mask; leave out --mask")
            object.__setattr__(self, "outpaint", parse_outpaint(self.outpaint))

    def _check_hires(self) -> None:
        scale = self.hires_scale
        if isinstance(scale, bool) or not isinstance(scale, int | float):
            raise ConfigError(f"hires scale must be a number, got {scale!r}")
        if not (math.isfinite(scale) and 1.0 <= scale <= 8.0):
            raise ConfigError(f"hires scale must be from 1 to 8, got {scale}")
        object.__setattr__(self, "hires_scale", float(scale))
        _check_choice("hires upscaler", self.hires_upscaler, HIRES_UPSCALERS)
        if self.hires_steps is not None:
            _check_int("hires_steps", self.hires_steps, minimum=1, maximum=MAX_STEPS)
        check_strength(self.hires_denoise, "hires denoise")
        object.__setattr__(self, "hires_denoise", float(self.hires_denoise))
        if self.hires and self.init_image is not None:
            raise ConfigError(
                "hires fix enlarges a txt2img result; with --init-image, ask for the "
                "larger --width/--height instead"
            )

    def _check_noise(self) -> None:
        object.__setattr__(self, "rng", check_rng(self.rng))
        strength = self.subseed_strength
        if isinstance(strength, bool) or not isinstance(strength, int | float):
            raise ConfigError(f"subseed strength must be a number, got {strength!r}")
        if not (math.isfinite(strength) and 0 <= strength <= 1):
            raise ConfigError(f"subseed strength must be from 0 to 1, got {strength}")
        object.__setattr__(self, "subseed_strength", float(strength))
        if self.subseed == RANDOM_SEED and type(self.subseed) is int:
            object.__setattr__(self, "subseed", None)
        if self.subseed is not None:
            _check_int("subseed", self.subseed, minimum=0, maximum=MAX_SEED)
            if self.subseed + self.num_images - 1 > MAX_SEED:
                raise ConfigError(
                    f"subseed {self.subseed} + {self.num_images} images runs past {MAX_SEED}"
                )
        elif strength > 0:
            raise ConfigError(
                f"subseed strength {strength} needs a variation seed: give --subseed N"
            )
        if self.seed_resize_from is not None:
            object.__setattr__(self, "seed_resize_from", parse_size(self.seed_resize_from))

    def _check_seed(self) -> None:
        """-1 becomes None (a random seed, as in A1111); others are 0 to ``MAX_SEED``."""
        if self.seed == RANDOM_SEED and type(self.seed) is int:  # A1111's "random"
            object.__setattr__(self, "seed", None)
        if self.seed is not None:
            _check_int("seed", self.seed, maximum=MAX_SEED)
            if self.seed < 0:
                raise ConfigError(
                    f"seed must be at least 0, or {RANDOM_SEED} for a random one, got {self.seed}"
                )
            if self.seed + self.num_images - 1 > MAX_SEED:
                raise ConfigError(
                    f"seed {self.seed} + {self.num_images} images runs past {MAX_SEED}"
                )

    def _check_text_settings(self) -> None:
        object.__setattr__(self, "emphasis", emphasis_mode(self.emphasis))
        _check_int("clip_skip", self.clip_skip)
        if self.clip_skip < 1:
            raise ConfigError(
                f"clip skip must be from 1 (the last layer) to the text encoder's layers "
                f"(12 for SD 1.x, 23 for SD 2.x), got {self.clip_skip}"
            )

    def with_defaults(self, width: int, height: int, seed: int) -> GenerationConfig:
        """This config with the size and seed filled in where they were left unset."""
        return replace(
            self,
            width=self.width or width,
            height=self.height or height,
            seed=self.seed if self.seed is not None else seed,
        )

    def to_dict(self) -> dict:
        return asdict(self)


def parse_size(value) -> tuple[int, int]:
    """``"WxH"`` or ``(width, height)`` as ``(width, height)``, each a multiple of 8 from
    64 to ``MAX_SIZE``; ``ConfigError`` otherwise."""
    try:
        if isinstance(value, str):
            width, height = (int(part) for part in value.lower().split("x"))
        else:
            width, height = value
    except (TypeError, ValueError):
        raise ConfigError(f"size must be WIDTHxHEIGHT, e.g. 512x768, got {value!r}") from None
    for name, number in (("width", width), ("height", height)):
        _check_int(f"seed resize {name}", number, minimum=64, maximum=MAX_SIZE)
        if number % 8:
            raise ConfigError(f"seed resize {name} must be a multiple of 8, got {number}")
    return (width, height)


def parse_outpaint(value) -> tuple[int, int, int, int]:
    """``"LEFT,TOP,RIGHT,BOTTOM"`` (or a 4-sequence) of pixels to add, each a whole
    number from 0 to ``MAX_SIZE``, at least one above 0; ``ConfigError`` otherwise."""
    try:
        parts = value.split(",") if isinstance(value, str) else list(value)
        sides = tuple(int(str(part).strip()) for part in parts)
    except (TypeError, ValueError):
        sides = ()
    if len(sides) != 4:
        raise ConfigError(
            f"outpaint must be LEFT,TOP,RIGHT,BOTTOM in pixels, e.g. 0,0,128,0, got {value!r}"
        )
    for name, number in zip(("left", "top", "right", "bottom"), sides, strict=True):
        _check_int(f"outpaint {name}", number, minimum=0, maximum=MAX_SIZE)
    if not any(sides):
        raise ConfigError("outpaint adds nothing: give at least one side above 0")
    return sides


def _check_choice(name: str, value, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def emphasis_mode(value) -> str:
    """The ``EMPHASIS_MODES`` name of ``value`` (a name or A1111's label), or
    ``ConfigError`` listing the modes."""
    if isinstance(value, str):
        wanted = value.strip().lower().replace(" ", "-").replace("_", "-")
        for mode, label in EMPHASIS_LABELS.items():
            if wanted in (mode, label.lower().replace(" ", "-")):
                return mode
    raise ConfigError(f"emphasis must be one of {', '.join(EMPHASIS_MODES)}, got {value!r}")


def _check_int(name: str, value, minimum: int | None = None, maximum: int | None = None):
    label = name.replace("_", " ")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{label} must be a whole number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{label} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{label} must be at most {maximum}, got {value}")
