"""An image's infotext read back as sdgen settings: what AUTOMATIC1111's "PNG Info ->
Send to txt2img" restores, for the infotexts sdgen, AUTOMATIC1111 (and Forge) and
stable-diffusion.cpp write.

``recall(parameters)`` maps each ``Key: value`` to ``GenerationConfig`` fields. A key
sdgen has no use for, or a value it cannot reproduce (a sampler it lacks, an upscaler
such as ESRGAN, A1111's ``Masked content: fill``), is listed in ``Recalled.ignored``
rather than refused: the image can still be made again, only not the same. Which model
the ``Model hash`` and ``Model`` name is for :mod:`sdgen.again` to find. The image
tasks' keys (``Denoising strength``, ``Mask blur``, ``Hires upscale``, ... and sdgen's
``Init image sha256``) become their settings; the images themselves are not in an
infotext (``Recalled.images`` says which it was made from).

Where the writers differ:

- sdgen: ``Sampler`` is a sampler's label (``DPM++ 2M Karras``), ``RNG`` is
  ``torch-cpu`` or ``torch-cuda`` when not sdgen's own (absent: ``sdgen``), ``Version:
  sdgen X``.
- AUTOMATIC1111: the same labels, or since 1.9 ``Sampler: DPM++ 2M`` with ``Schedule
  type: Karras``; ``RNG: CPU`` or ``NV`` (absent: its default, the GPU's, which
  ``torch-cuda`` draws); ``ENSD`` (eta noise seed delta) shifts the seeds of ancestral
  samplers' step noise.
- stable-diffusion.cpp: ``Sampler: euler_a``, or ``dpm++2m karras`` (the scheduler after
  a space); ``RNG: cuda`` (its default, torch's CUDA Philox generator: ``torch-cuda``),
  ``cpu`` (torch's CPU generator) or ``std_default`` (C++'s, which sdgen lacks); it
  always writes ``Guidance`` (distilled guidance, a Flux setting that SD 1.x/2.x ignore)
  and ``Eta``, and ends with ``SDCPP: {JSON}``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .config import (
    DEFAULT_SAMPLER,
    FILL_LABELS,
    HIRES_UPSCALERS,
    RESIZE_LABELS,
    UPSCALER_LABELS,
    emphasis_mode,
    parse_outpaint,
    parse_size,
)
from .errors import ConfigError
from .noise import check_rng
from .output.info import ImageParameters
from .samplers import SAMPLERS, get_sampler

#: Who wrote an infotext (``Recalled.source``).
SOURCES = ("sdgen", "a1111", "sd.cpp")


@dataclass(frozen=True)
class Ignored:
    """A setting sdgen did not follow: ``label`` for the warning (``Hires upscale``, or
    ``RNG (std_default)`` for a value it cannot use), and the ``GenerationConfig`` fields it is
    about, so that a command-line value for them silences it."""

    label: str
    about: tuple[str, ...] = ()


@dataclass(frozen=True)
class Recalled:
    """An infotext as sdgen settings.

    prompt: the prompt.
    settings: ``GenerationConfig`` fields (besides ``prompt``) the infotext sets.
    model_name / model_hash: its ``Model`` and ``Model hash``, or None.
    embeddings: ``{name: shorthash}`` from ``TI hashes``.
    loras: ``{name: shorthash}`` from ``Lora hashes`` (the ``<lora:...>`` tags that ask
        for them are in the prompt, as A1111 keeps them).
    ignored: what sdgen did not follow, in infotext order.
    source: who wrote it, one of ``SOURCES``.
    images: the images it was made from, ``{"init_image": shorthash or None, "mask":
        ...}``, for an infotext of an image task (``Denoising strength`` without a hires
        pass, or sdgen's ``Init image sha256``); the paths are not in the infotext, so
        ``sdgen again`` is given them. Empty for txt2img.
    """

    prompt: str
    settings: dict = field(default_factory=dict)
    model_name: str | None = None
    model_hash: str | None = None
    embeddings: dict = field(default_factory=dict)
    loras: dict = field(default_factory=dict)
    ignored: tuple[Ignored, ...] = ()
    source: str = "a1111"
    images: dict = field(default_factory=dict)


def infotext_source(settings: dict) -> str:
    """``sdgen``, ``sd.cpp`` or ``a1111`` (the default: A1111 and its forks) from the
    ``Version`` an infotext gives."""
    version = settings.get("Version", "")
    if version.startswith("sdgen"):
        return "sdgen"
    if version == "stable-diffusion.cpp" or "SDCPP" in settings:
        return "sd.cpp"
    return "a1111"


def recall(parameters: ImageParameters) -> Recalled:
    """The settings ``parameters`` (``sdgen.output.info.read_parameters``) hold; raises
    ``ConfigError`` for a value of a key sdgen uses that is not what that key holds
    (``Steps: many``)."""
    given = dict(parameters.settings)
    source = infotext_source(given)
    settings: dict = {"negative_prompt": parameters.negative_prompt}
    ignored: list[Ignored] = []
    for key, value in given.items():
        reader = _READERS.get(key)
        if source == "sd.cpp" and key in _SDCPP_HIRES:
            continue  # its own meaning: see _image_task
        if reader is not None:
            read = reader(key, value)
            note = read.pop(_IGNORED, None)
            ignored.extend([note] if note else [])
            settings.update(read)
        elif key not in _UNUSED.get(source, ()) and key not in (*_SAMPLING_KEYS, *_IMAGE_KEYS):
            ignored.append(Ignored(key))
    sampler, notes = _sampler(given, source)
    if sampler is not None:
        settings["sampler"] = sampler
    ignored.extend(Ignored(note, ("sampler",)) for note in notes)
    rng, note = _rng(given.get("RNG"), source)
    settings["rng"] = rng
    if note:
        ignored.append(Ignored(note, ("rng",)))
    ignored.extend(_sampler_noise(given, source, settings.get("sampler", DEFAULT_SAMPLER)))
    strength = settings.pop("subseed_strength", None)
    subseed = settings.pop("subseed", None)
    if strength and subseed is not None:
        settings.update(subseed=subseed, subseed_strength=strength)
    images = _image_task(given, source, settings, ignored)
    return Recalled(
        prompt=parameters.prompt,
        settings=settings,
        model_name=given.get("Model") or None,
        model_hash=given.get("Model hash") or None,
        embeddings=_embeddings(given.get("TI hashes", "")),
        loras=_embeddings(given.get("Lora hashes", "")),
        ignored=tuple(ignored),
        source=source,
        images=images,
    )


def _image_task(given: dict, source: str, settings: dict, ignored: list) -> dict:
    """Settle the image-task settings ``settings`` read: ``Denoising strength`` is the
    hires pass's when there is one (A1111's txt2img writes it so), else img2img's
    strength; the images the infotext says it started from (``Recalled.images``).
    sd.cpp's ``Hires upscale`` names its upscaler and ``Hires scale`` the scale."""
    if source == "sd.cpp":
        settings.pop("hires_scale", None)
        settings.pop("hires", None)
        if "Hires scale" in given:
            settings.update(hires=True, hires_scale=_number("Hires scale", given["Hires scale"]))
            upscaler = given.get("Hires upscale", "latent").strip().lower()
            if upscaler in HIRES_UPSCALERS:
                settings["hires_upscaler"] = upscaler
            else:
                ignored.append(Ignored(f"Hires upscale ({upscaler})", ("hires_upscaler",)))
    denoise = settings.pop("denoising_strength", None)
    if settings.get("hires"):
        if denoise is not None:
            settings["hires_denoise"] = denoise
        return {}
    init = given.get("Init image sha256", "").strip() or None
    if denoise is None and init is None:
        return {}
    if denoise is not None:
        settings["strength"] = denoise
    mask = given.get("Mask sha256", "").strip() or None
    masked = mask is not None or (source != "sdgen" and "Mask blur" in given)
    return {"init_image": init or "", "mask": (mask or "") if masked else None}


def _whole(key: str, value: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise ConfigError(f"infotext {key}: {value!r} is not a whole number") from None


def _number(key: str, value: str) -> float:
    try:
        number = float(value.strip())
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise ConfigError(f"infotext {key}: {value!r} is not a number")
    return number


def _size(key: str, value: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in value.strip().lower().split("x"))
    except ValueError:
        raise ConfigError(f"infotext {key}: {value!r} is not WIDTHxHEIGHT") from None
    return width, height


def _read_size(key, value):
    width, height = _size(key, value)
    return {"width": width, "height": height}


def _read_emphasis(key, value):
    try:
        return {"emphasis": emphasis_mode(value)}
    except ConfigError as error:
        raise ConfigError(f"infotext {key}: {error}") from None


def _read_resize(key, value):
    try:
        return {"seed_resize_from": parse_size(_size(key, value))}
    except ConfigError as error:
        raise ConfigError(f"infotext {key}: {error}") from None


def _read_lora_options(key, value):
    """sdgen's ``Lora options``: the ``--lora`` values (or ``GenerationConfig.loras``) an
    image was made with, which its prompt's tags do not show."""
    from .text.lora_tags import lora_requests

    texts = [part.strip() for part in value.strip().strip('"').split(",") if part.strip()]
    try:
        return {"loras": lora_requests(texts)}
    except ConfigError as error:
        raise ConfigError(f"infotext {key}: {error}") from None


#: What a reader returns for a value sdgen cannot follow: an ``Ignored`` note.
_IGNORED = "_ignored"
#: sd.cpp's hires keys: ``Hires upscale`` is its upscaler's name, ``Hires scale`` the scale.
_SDCPP_HIRES = ("Hires upscale", "Hires scale")


def _read_labelled(field_name: str, labels: dict):
    """A reader of a key whose value is one of ``labels`` (sdgen's name -> A1111's label)
    or sdgen's name itself; another value (an upscaler or fill sdgen lacks) is ignored,
    with a note, and the setting keeps its default."""

    def read(key, value):
        wanted = value.strip().lower()
        for name, label in labels.items():
            if wanted in (name, label.lower()):
                return {field_name: name}
        return {_IGNORED: Ignored(f"{key} ({value.strip()})", (field_name,))}

    return read


def _read_outpaint(key, value):
    try:
        return {"outpaint": parse_outpaint(value.strip().strip('"'))}
    except ConfigError as error:
        raise ConfigError(f"infotext {key}: {error}") from None


def _read_area(key, value):
    wanted = value.strip().lower()
    if wanted in ("only masked", "masked"):
        return {"inpaint_area": "masked"}
    if wanted in ("whole picture", "full"):
        return {"inpaint_area": "full"}
    raise ConfigError(f"infotext {key}: {value.strip()!r} is not Whole picture or Only masked")


#: The keys read into settings, and how.
_READERS = {
    "Lora options": _read_lora_options,
    "Steps": lambda key, value: {"steps": _whole(key, value)},
    "CFG scale": lambda key, value: {"guidance_scale": _number(key, value)},
    "Seed": lambda key, value: {"seed": _whole(key, value)},
    "Size": _read_size,
    "Clip skip": lambda key, value: {"clip_skip": _whole(key, value)},
    "Emphasis": _read_emphasis,
    "Variation seed": lambda key, value: {"subseed": _whole(key, value)},
    "Variation seed strength": lambda key, value: {"subseed_strength": _number(key, value)},
    "Seed resize from": _read_resize,
    # the image tasks: A1111's keys, then sdgen's own
    "Denoising strength": lambda key, value: {"denoising_strength": _number(key, value)},
    "Mask blur": lambda key, value: {"mask_blur": _whole(key, value)},
    "Masked content": _read_labelled("inpaint_fill", FILL_LABELS),
    "Inpaint area": _read_area,
    "Masked area padding": lambda key, value: {"inpaint_padding": _whole(key, value)},
    "Hires upscale": lambda key, value: {"hires": True, "hires_scale": _number(key, value)},
    "Hires steps": lambda key, value: {"hires_steps": _whole(key, value)},
    "Hires upscaler": _read_labelled("hires_upscaler", UPSCALER_LABELS),
    "Resize mode": _read_labelled("resize", RESIZE_LABELS),
    "Outpaint": _read_outpaint,
}
#: Keys read elsewhere in ``recall`` (the images an image task started from).
_IMAGE_KEYS = ("Init image sha256", "Mask sha256")
#: Keys read elsewhere in ``recall`` (sampler, noise and model).
_SAMPLING_KEYS = ("Sampler", "Schedule type", "RNG", "ENSD", "Eta", "Sampler RNG")
_MODEL_KEYS = ("Model", "Model hash", "TI hashes", "Lora hashes", "Version")
#: Keys each writer puts there that do not change an SD 1.x/2.x image sdgen makes.
_UNUSED = {
    "sdgen": _MODEL_KEYS,
    "a1111": (*_MODEL_KEYS, "Batch size", "Batch pos"),
    "sd.cpp": (*_MODEL_KEYS, "SDCPP", "Guidance"),
}

#: Schedule types (A1111's labels, lower case) and sd.cpp schedulers sdgen's samplers
#: follow: ``karras``, and the plain table each sampler has by itself.
_PLAIN_SCHEDULES = ("automatic", "uniform", "normal", "discrete")
#: stable-diffusion.cpp's sampler names, and sdgen's.
_SDCPP_SAMPLERS = {"euler_a": "euler-a", "euler": "euler", "dpm++2m": "dpmpp-2m"}


def _sampler(given: dict, source: str) -> tuple[str | None, list[str]]:
    """The sdgen sampler ``Sampler`` (and ``Schedule type``) name, or None to keep the
    default; and what of them could not be followed."""
    label = given.get("Sampler", "").strip()
    schedule = given.get("Schedule type", "").strip()
    if source == "sd.cpp":
        label, _, schedule = label.partition(" ")
        name = _SDCPP_SAMPLERS.get(label)
    else:
        try:
            name = get_sampler(label).name if label else None
        except ConfigError:
            name = None
    if label and name is None:
        notes = [f"Sampler ({given['Sampler'].strip()})"]
        return None, notes
    wanted = schedule.lower()
    if name is None or not wanted or (wanted in _PLAIN_SCHEDULES and wanted != "automatic"):
        return name, []
    if wanted == "automatic":  # A1111 1.9+: the sampler's own; DPM++ 2M's is Karras
        return ("dpmpp-2m-karras" if name == "dpmpp-2m" else name), []
    karras = f"{name}-karras"
    if wanted == "karras" and (name.endswith("-karras") or karras in SAMPLERS):
        return (name if name.endswith("-karras") else karras), []
    if source == "sd.cpp":
        return name, [f"Sampler ({given['Sampler'].strip()})"]
    return name, [f"Schedule type ({schedule})"]


def _rng(value: str | None, source: str) -> tuple[str, str | None]:
    """The ``rng`` kind of an infotext's ``RNG``, and a note when sdgen cannot draw it
    (then ``torch-cpu``, the generator of A1111's and sd.cpp's seeds nearest to hand)."""
    if source == "sdgen":
        return check_rng(value or "sdgen"), None
    if value is None:  # A1111's default (GPU) and sd.cpp's (cuda) are not written
        return "torch-cuda", None
    try:
        return check_rng(value), None  # CPU, GPU, NV (A1111); cpu, cuda (sd.cpp)
    except ConfigError:
        return "torch-cpu", f"RNG ({value})"


def _sampler_noise(given: dict, source: str, sampler: str) -> list[Ignored]:
    """Notes for the settings of an ancestral sampler's step noise sdgen does not have:
    A1111's ``ENSD`` and an ``Eta`` (A1111 writes it only when not 1), sd.cpp's ``Eta``
    when not its default and a ``Sampler RNG`` of its own."""
    ancestral = get_sampler(sampler).start(1).needs_noise
    notes = []
    ensd = given.get("ENSD", "0").strip()
    if ensd not in ("0", "") and ancestral:
        notes.append(Ignored(f"ENSD ({ensd})", ("sampler",)))
    if "Eta" in given:
        eta = given["Eta"].strip()
        default = ("1", "inf") if ancestral else ("0", "inf")
        try:
            usual = source == "sd.cpp" and float(eta) in tuple(map(float, default))
        except ValueError:
            usual = False
        if not usual:
            notes.append(Ignored(f"Eta ({eta})", ("sampler",)))
    if "Sampler RNG" in given and given["Sampler RNG"] != given.get("RNG"):
        notes.append(Ignored(f"Sampler RNG ({given['Sampler RNG']})", ("rng",)))
    return notes


def _embeddings(hashes: str) -> dict:
    """``{name: shorthash}`` of a ``TI hashes`` value (``"name: 1f2e.., other: 3a4b.."``)."""
    pairs = (part.rsplit(":", 1) for part in hashes.split(",") if ":" in part)
    return {name.strip(): digest.strip() for name, digest in pairs}
