"""What an image is: its manifest fields, its resume identity and its infotext, assembled
from each feature's own contribution.

A ``Contributor`` names the manifest fields one feature adds for an image, which of them
must match for a resumed run to skip the image, the value a record written before the
feature existed implies, and the infotext settings it adds. ``CONTRIBUTORS`` holds them
in order (the ``Contributor`` record is in :mod:`.contributor`; the image tasks' is in
:mod:`.image_task_record`); a new feature adds one with ``register`` instead of editing
a fixed list. Because a missing field reads as its
``legacy`` value, manifests written by earlier versions keep resuming as long as the
meaning they imply is still today's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import __version__
from ..noise import DEFAULT_RNG
from ..output.png import format_infotext, format_number
from ..samplers import get_sampler
from .contributor import Contributor
from .image_task_record import IMAGE_TASK

if TYPE_CHECKING:
    from .work import PlannedImage

#: How prompts are read, recorded with every image: ``"plain"`` when the prompts mean
#: what their text says (no A1111 syntax in them, or ``--emphasis off``), else
#: ``"a1111-" + emphasis`` (``a1111-original``, ``a1111-no-norm``, ``a1111-ignore``).
#: Records written before this field existed mean ``"plain"``, so a rerun remakes only
#: the images whose prompts use the syntax, which earlier versions read as plain text;
#: the others are the same work (the same pixels) and are skipped. A change to how the
#: syntax is read needs a new name here.
SYNTAX_PREFIX = "a1111-"


def _generation(image: PlannedImage) -> dict:
    config = image.job.config
    sampler = get_sampler(config.sampler)
    return {
        "prompt": config.prompt,
        "negative_prompt": config.negative_prompt,
        "steps": config.steps,
        "sampler": sampler.name,
        "sampler_label": sampler.label,
        "guidance_scale": config.guidance_scale,
        "seed": image.seed,
        "width": config.width,
        "height": config.height,
    }


def _generation_infotext(fields: dict) -> dict:
    return {
        "Steps": fields["steps"],
        "Sampler": fields["sampler_label"],
        "CFG scale": format_number(fields["guidance_scale"]),
        "Seed": fields["seed"],
        "Size": f"{fields['width']}x{fields['height']}",
    }


def _model_infotext(fields: dict) -> dict:
    """A1111's ``Model hash`` (where the model came from a checkpoint file) and ``Model``."""
    from ..catalog import model_hash

    digest = model_hash(fields["model"])
    hashed = {"Model hash": digest} if digest else {}
    return {**hashed, "Model": fields["model"]}


def prompt_syntax(config) -> str:
    """The ``prompt_syntax`` field of an image made with ``config`` (see above)."""
    from ..text.prompt_syntax import uses_syntax

    if config.emphasis == "off":
        return "plain"
    texts = (config.prompt, config.negative_prompt)
    return SYNTAX_PREFIX + config.emphasis if any(map(uses_syntax, texts)) else "plain"


def _text(image: PlannedImage) -> dict:
    config = image.job.config
    return {
        "prompt_syntax": prompt_syntax(config),
        "emphasis": config.emphasis,
        "clip_skip": config.clip_skip,
        "embeddings": dict(image.job.embeddings),
    }


def _text_infotext(fields: dict) -> dict:
    """A1111's keys: ``Clip skip`` when above 1, ``Emphasis`` when not the default,
    ``TI hashes`` when embeddings were used."""
    from ..text.prompt_syntax import DEFAULT_EMPHASIS, EMPHASIS_LABELS

    settings: dict = {}
    if fields.get("clip_skip", 1) > 1:
        settings["Clip skip"] = fields["clip_skip"]
    emphasis = fields.get("emphasis", DEFAULT_EMPHASIS)
    if emphasis != DEFAULT_EMPHASIS:
        settings["Emphasis"] = EMPHASIS_LABELS[emphasis]
    embeddings = fields.get("embeddings") or {}
    if embeddings:
        hashes = ", ".join(
            f"{name.replace(':', '').replace(',', '')}: {sha256[:12]}"
            for name, sha256 in embeddings.items()
        )
        settings["TI hashes"] = f'"{hashes}"'
    return settings


def _loras(image: PlannedImage) -> dict:
    """The LoRAs merged: ``loras`` (name, sha256, te and unet weights: the identity) and
    ``lora_files`` (each one's file and A1111's hash), both only when there are any."""
    uses = image.job.loras
    if not uses:
        return {}
    fields = {
        "loras": [use.identity() for use in uses],
        "lora_files": {use.name: use.record() for use in uses},
    }
    options = [request.text for request in image.job.config.loras]
    if options:  # what the prompt's tags do not show: recorded, not identity
        fields["lora_options"] = options
    return fields


def _loras_infotext(fields: dict) -> dict:
    """A1111's ``Lora hashes: "name: shorthash, ..."`` (names without ``:`` and ``,``,
    as A1111 writes them); the ``<lora:...>`` tags stay in the recorded prompt. The
    LoRAs asked for apart from the tags (``--lora``) have sdgen's ``Lora options:
    "style:0.8, ..."``, so ``sdgen again`` merges them too."""
    files = fields.get("lora_files") or {}
    if not files:
        return {}
    hashes = ", ".join(
        f"{name.replace(':', '').replace(',', '')}: {(r.get('a1111_hash') or r['sha256'])[:12]}"
        for name, r in files.items()
    )
    settings = {"Lora hashes": f'"{hashes}"'}
    if fields.get("lora_options"):  # sdgen's: the LoRAs given apart from the prompt's tags
        settings["Lora options"] = f'"{", ".join(fields["lora_options"])}"'
    return settings


def _noise(image: PlannedImage) -> dict:
    config = image.job.config
    subseed = None if config.subseed is None else config.subseed + image.k
    resize = config.seed_resize_from
    return {
        "rng": config.rng,
        "subseed": subseed if config.subseed_strength > 0 else None,
        "subseed_strength": config.subseed_strength,
        "seed_resize_from": None if resize is None else list(resize),
    }


def _noise_infotext(fields: dict) -> dict:
    """A1111's ``Variation seed``, ``Variation seed strength`` and ``Seed resize from``
    where used, and ``RNG`` where it is not sdgen's own."""
    settings: dict = {}
    if fields.get("subseed_strength"):
        settings["Variation seed"] = fields["subseed"]
        settings["Variation seed strength"] = format_number(fields["subseed_strength"])
    if fields.get("seed_resize_from"):
        width, height = fields["seed_resize_from"]
        settings["Seed resize from"] = f"{width}x{height}"
    if fields.get("rng", DEFAULT_RNG) != DEFAULT_RNG:
        settings["RNG"] = fields["rng"]
    return settings


def _template(image: PlannedImage) -> dict:
    """A dynamic prompt's mode, its templates where they differ from the prompts made
    of them, and the hashes of the wildcards it reads."""
    template = image.job.template
    if template is None:
        return {}
    config = image.job.config
    fields: dict = {"prompt_mode": template.mode}
    if template.prompt != config.prompt:
        fields["prompt_template"] = template.prompt
    if template.negative_prompt != config.negative_prompt:
        fields["negative_prompt_template"] = template.negative_prompt
    if template.wildcards:
        fields["wildcards"] = dict(template.wildcards)
    return fields


def _template_seedless(fields: dict) -> dict:
    """The prompts of a random template come from the seed: without the seed, the
    templates (and the wildcards they read) say which request an image belongs to."""
    if fields.get("prompt_mode") != "random":
        return {}
    source = (
        "random",
        fields.get("prompt_template", fields.get("prompt")),
        fields.get("negative_prompt_template", fields.get("negative_prompt")),
        _hashable(fields.get("wildcards") or {}),
    )
    return {
        "prompt": source,
        "negative_prompt": None,
        "prompt_syntax": None,
        "embeddings": None,
        "loras": None,  # a tag in the template: the seed chooses
    }


CONTRIBUTORS: list[Contributor] = [
    Contributor(
        "generation",
        _generation,
        identity=(
            "prompt",
            "negative_prompt",
            "steps",
            "sampler",
            "guidance_scale",
            "seed",
            "width",
            "height",
        ),
        infotext=_generation_infotext,
    ),
    Contributor(
        "model",
        lambda image: {"model": image.job.model},
        identity=("model",),
        infotext=_model_infotext,
    ),
    Contributor(
        "text",
        _text,
        identity=("prompt_syntax", "clip_skip", "embeddings"),
        legacy={"prompt_syntax": "plain", "clip_skip": 1, "embeddings": {}},
        infotext=_text_infotext,
    ),
    Contributor(
        "loras",
        _loras,
        identity=("loras",),
        legacy={"loras": []},
        infotext=_loras_infotext,
    ),
    Contributor(
        "noise",
        _noise,
        identity=("rng", "subseed", "subseed_strength", "seed_resize_from"),
        legacy={
            "rng": DEFAULT_RNG,
            "subseed": None,
            "subseed_strength": 0.0,
            "seed_resize_from": None,
        },
        infotext=_noise_infotext,
    ),
    IMAGE_TASK,
    Contributor(  # where a sweep's cell sits in it: recorded, never part of the identity
        "sweep",
        lambda image: {} if image.job.sweep is None else {"sweep": image.job.sweep.record()},
    ),
    # the prompts (above) are the image's identity; the template only finds, without the
    # seed, the earlier run of a random template
    Contributor("dynamic prompts", _template, seedless=_template_seedless),
    Contributor(
        "version",
        lambda image: {"version": __version__},
        infotext=lambda fields: {"Version": f"sdgen {fields['version']}"},
    ),
]


def register(contributor: Contributor) -> None:
    """Add a feature's contribution (replacing one of the same name)."""
    CONTRIBUTORS[:] = [c for c in CONTRIBUTORS if c.name != contributor.name] + [contributor]


def parameters(image: PlannedImage) -> dict:
    """Every contributor's manifest fields for ``image``, in contributor order."""
    fields: dict = {}
    for contributor in CONTRIBUTORS:
        fields.update(contributor.fields(image))
    return fields


def identity_keys(with_seed: bool = True) -> tuple[str, ...]:
    """The fields that must match for a resumed run to skip an image (without ``seed``:
    those that find the seed an earlier run chose)."""
    keys = [key for contributor in CONTRIBUTORS for key in contributor.identity]
    return tuple(key for key in keys if with_seed or key != "seed")


def identity(fields: dict, with_seed: bool = True) -> tuple:
    """The resume identity of a record or of ``parameters(image)``: the identity fields'
    values, a missing one read as its contributor's ``legacy`` value (a record written
    before the field existed). Two images are the same work when their identities are
    equal. Without the seed, a contributor's ``seedless`` values stand in for the fields
    the seed decides (the prompts of a random template: its templates instead)."""
    legacy: dict = {}
    seedless: dict = {}
    for contributor in CONTRIBUTORS:
        legacy.update(contributor.legacy)
        if not with_seed:
            seedless.update(contributor.seedless(fields))
    missing = object()
    values = []
    for key in identity_keys(with_seed):
        if key in seedless:
            values.append(seedless[key])
            continue
        value = fields.get(key, legacy.get(key, missing))
        values.append(None if value is missing else _hashable(value))
    return tuple(values)


def _hashable(value):
    if isinstance(value, list):
        return tuple(_hashable(item) for item in value)
    if isinstance(value, dict):
        return tuple(sorted((key, _hashable(item)) for key, item in value.items()))
    return value


def infotext(fields: dict) -> str:
    """The AUTOMATIC1111 infotext of an image with ``fields`` (``parameters(image)``)."""
    settings: dict = {}
    for contributor in CONTRIBUTORS:
        settings.update(contributor.infotext(fields))
    return format_infotext(fields["prompt"], fields["negative_prompt"], settings)


def settings_from_infotext(text: str) -> dict:
    """The ``GenerationConfig`` settings (and ``model``) an infotext written by
    :func:`infotext` records, read back (:func:`sdgen.recall.recall`): what A1111's "PNG
    info" would restore. ``embeddings`` is ``{name: shorthash}`` from ``TI hashes``,
    ``lora_hashes`` the same from ``Lora hashes``."""
    from ..output.info import parameters_from_text
    from ..recall import recall
    from ..text.prompt_syntax import DEFAULT_EMPHASIS

    recalled = recall(parameters_from_text(text))
    settings: dict = {"prompt": recalled.prompt, "clip_skip": 1, "emphasis": DEFAULT_EMPHASIS}
    settings.update(recalled.settings)
    if recalled.model_name is not None:
        settings["model"] = recalled.model_name
    settings["embeddings"] = recalled.embeddings
    settings["lora_hashes"] = recalled.loras
    return settings
