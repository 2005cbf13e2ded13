"""Make an image again from the infotext it holds (``sdgen again IMAGE``), as
AUTOMATIC1111's "PNG Info -> Send to txt2img" then Generate does.

    again = again_request("outputs/00000-42-a-cat.png", {"seed": "+1"})
    generation = start_generation(again.request)
    print("ignored:", ", ".join(again.ignored))

The infotext's settings (:mod:`sdgen.recall`) are the request's; each given override
wins. The model is found by the infotext's ``Model hash`` (A1111's: the first 10 hex
digits of the checkpoint file's sha256, which sdgen records for every import), then by
its ``Model`` name: an sdgen model's name, a built-in model's checkpoint file name, or
the name of the file a model was imported from (with or without its suffix).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .batch.executors import LoadOptions
from .batch.work import OutputOptions
from .catalog import get_model_spec
from .config import MAX_SEED
from .errors import ConfigError, UsageError
from .output.info import read_parameters
from .recall import Ignored, Recalled, recall
from .registry import model_specs
from .service import GenerateRequest
from .spec import ModelSpec
from .store import imported_specs

#: ``--seed +N``: the image's own seed plus N.
_SEED_OFFSET = re.compile(r"\+\s*(\d+)")
#: Suffixes a ``Model`` may carry (sd.cpp writes the file name).
_CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf")


class ModelNotHereError(UsageError):
    """The model an infotext names is neither built in nor imported."""


@dataclass(frozen=True)
class Again:
    """A request to make an image again.

    request: what to generate.
    recalled: the image's infotext as settings.
    ignored: the labels of what the image's infotext asks for that this request will
        not do (``Hires upscale``, ``RNG (std_default)``), in infotext order.
    """

    request: GenerateRequest
    recalled: Recalled
    ignored: tuple[str, ...] = field(default_factory=tuple)


def again_request(
    image: str | Path,
    overrides: Mapping[str, object] | None = None,
    *,
    model: str | None = None,
    output: OutputOptions | None = None,
    load: LoadOptions | None = None,
) -> Again:
    """The request that makes ``image`` again.

    overrides: ``GenerationConfig`` fields (``prompt`` too) that win over the image's;
        ``seed`` may be ``"+N"``: the image's seed plus N.
    model: the model to use instead of the image's.
    Raises ``ImageInfoError`` (no infotext), ``ConfigError`` (a bad value in it or in
    ``overrides``) or ``ModelNotHereError``, all before anything is loaded.
    """
    overrides = dict(overrides or {})
    load = load or LoadOptions()
    recalled = recall(read_parameters(image))
    settings = dict(recalled.settings)
    if "seed" in overrides:
        overrides["seed"] = resolve_seed(overrides["seed"], settings.get("seed"))
    prompt = overrides.pop("prompt", None) or recalled.prompt
    settings.update(overrides)
    notes = [note for note in recalled.ignored if not set(note.about) & set(overrides)]
    notes.extend(_check_images(image, recalled, settings))
    if model is None:
        model, note = find_model(recalled, image)
        notes.extend([note] if note else [])
    notes.extend(_missing_embeddings(recalled.embeddings, load.embeddings_dir))
    notes.extend(_missing_loras(recalled.loras, load.lora_dir, prompt, settings))
    request = GenerateRequest(
        prompt=prompt,
        settings=settings,
        model=model,
        output=output or OutputOptions(),
        load=load,
    )
    return Again(request, recalled, tuple(note.label for note in notes))


def _check_images(image, recalled: Recalled, settings: dict) -> list[Ignored]:
    """Refuse (``ConfigError``) to make an image task's image again without its init
    image and mask, which an infotext names only by hash (sdgen's ``Init image sha256``
    and ``Mask sha256``; A1111 writes none): they must be given again. A given image
    whose sha256 does not start with the recorded hash gets a note."""
    from .batch.image_task import read_images

    wanted = recalled.images
    notes = []
    for key, flag in (("init_image", "--init-image"), ("mask", "--mask")):
        digest = wanted.get(key)
        if digest is None:
            continue
        what = key.replace("_", " ")
        if settings.get(key) is None:
            known = f" (sha256 {digest}...)" if digest else ""
            raise ConfigError(
                f"{image} was made from a{'n' if key == 'init_image' else ''} {what}{known}, "
                f"which its infotext does not hold; give it again with {flag} PATH"
            )
    settings.update(read_images(settings))
    for key in ("init_image", "mask"):
        digest, given = wanted.get(key), settings.get(key)
        if digest and given is not None and not given.sha256.startswith(digest.lower()):
            label = "Init image sha256" if key == "init_image" else "Mask sha256"
            notes.append(Ignored(f"{label} ({digest}: {given.label} is another image)"))
    return notes


def resolve_seed(value, original: int | None) -> int:
    """The seed ``value`` asks for: a number, or ``"+N"`` for ``original`` plus N."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip()
    offset = _SEED_OFFSET.fullmatch(text)
    if offset is None:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(
                f"seed must be a whole number, or +N for the image's seed plus N, got {text!r}"
            ) from None
    if original is None:
        raise ConfigError(f"--seed {text}: the image's infotext gives no seed to add to")
    seed = original + int(offset.group(1))
    if seed > MAX_SEED:
        raise ConfigError(f"--seed {text}: {original} + {offset.group(1)} is past {MAX_SEED}")
    return seed


def find_model(recalled: Recalled, image: str | Path = "the image") -> tuple[str, Ignored | None]:
    """The model ``recalled`` names, and a note when its ``Model hash`` matched no model
    but its name did; the default model when it names none. Raises
    ``ModelNotHereError`` with how to import the model when none here matches."""
    name, digest = recalled.model_name, recalled.model_hash
    if name is None and digest is None:
        return GenerateRequest.model, None
    specs = [*model_specs().values(), *imported_specs().values()]
    if digest:
        wanted = digest.strip().lower()
        for spec in specs:
            if len(wanted) >= 8 and spec.model_hash and _sha256(spec).startswith(wanted):
                return spec.name, None
    if name:
        found = _by_name(name, specs)
        if found is not None:
            return found, Ignored(f"Model hash ({digest})") if digest else None
    raise ModelNotHereError(_not_here(image, name, digest))


def _sha256(spec: ModelSpec) -> str:
    return (spec.source_sha256 or spec.checkpoint.sha256).lower()


def _by_name(name: str, specs: list[ModelSpec]) -> str | None:
    """The model called ``name``, or whose checkpoint file is (suffix or not)."""
    try:
        return get_model_spec(name).name
    except ConfigError:
        pass
    wanted = _stem(name)
    for spec in specs:
        files = [spec.name]
        if spec.checkpoint is not None:
            files.append(spec.checkpoint.filename)
        if spec.source is not None:
            files.append(spec.source)
        if any(_stem(Path(file).name) == wanted for file in files):
            return spec.name
    return None


def _stem(name: str) -> str:
    name = name.strip().casefold()
    for suffix in _CHECKPOINT_SUFFIXES:
        name = name.removesuffix(suffix)
    return name


def _not_here(image, name: str | None, digest: str | None) -> str:
    what = ", ".join(
        f"{key}: {value}" for key, value in (("Model", name), ("Model hash", digest)) if value
    )
    suggested = re.sub(r"[^A-Za-z0-9._-]", "-", _stem(name or "") or "NAME")[:64]
    return (
        f"{image} was made with a model that is not here ({what}); import its checkpoint "
        f"with `sdgen import PATH --name {suggested}`, or choose one with --model NAME"
    )


def _missing_loras(hashes: dict, folder, prompt: str, settings: dict) -> list[Ignored]:
    """A note for each LoRA of ``Lora hashes`` that is not in the LoRA folder, or is
    another file there (see ``sdgen.adapters.lora.uses.missing_loras``)."""
    if not hashes:
        return []
    from .adapters.lora.uses import missing_loras
    from .config import GenerationConfig

    config = GenerationConfig(prompt=prompt, loras=settings.get("loras", ()))
    return [Ignored(note) for note in missing_loras(hashes, folder, config)]


def _missing_embeddings(embeddings: dict, folder: Path | None) -> list[Ignored]:
    """A note for each embedding the infotext's ``TI hashes`` names that is not in the
    embeddings folder, or is another file there (its sha256 does not start so)."""
    if not embeddings:
        return []
    from .adapters.textual_inversion import EmbeddingLibrary
    from .weights import known_sha256

    library = EmbeddingLibrary(folder)
    notes = []
    for name, digest in embeddings.items():
        path = library.path(name)
        if path is None:
            notes.append(Ignored(f"TI hashes ({name}: not in {library.folder})"))
        elif digest and not known_sha256(path).startswith(digest.lower()):
            notes.append(Ignored(f"TI hashes ({name}: {path.name} is another file)"))
    return notes
