"""What an image is: its manifest fields, its resume identity and its infotext, assembled
from each feature's own contribution.

A ``Contributor`` names the manifest fields one feature adds for an image, which of them
must match for a resumed run to skip the image, the value a record written before the
feature existed implies, and the infotext settings it adds. ``CONTRIBUTORS`` holds them
in order; a new feature (adapters, init images, prompt weighting) adds one with
``register`` instead of editing a fixed list. Because a missing field reads as its
``legacy`` value, manifests written by earlier versions keep resuming as long as the
meaning they imply is still today's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import __version__
from ..output.png import format_infotext, format_number
from ..samplers import get_sampler

if TYPE_CHECKING:
    from .work import PlannedImage

#: How prompts are read, recorded with every image. Change it whenever the same prompt
#: text comes to mean something else (e.g. ``(word:1.2)`` weighting), so a rerun makes
#: such images again instead of resuming over ones made under the old meaning. Records
#: written before this field existed mean ``"plain"``.
PROMPT_SYNTAX = "plain"


@dataclass(frozen=True)
class Contributor:
    """One feature's part of an image's record.

    name: what the feature is, for messages and ``register``.
    fields: ``fields(image)``: the manifest fields this feature adds for ``image``.
    identity: the keys of ``fields`` that must equal an earlier record's for a resumed
        run to skip the image (the rest are only recorded).
    legacy: the value a key takes in a record that lacks it (written before the feature
        existed); a key without one must be present to match.
    infotext: ``infotext(fields)``: the ``Key: value`` settings this feature adds to the
        PNG's infotext, from the image's complete fields [none].
    """

    name: str
    fields: Callable[[PlannedImage], dict]
    identity: tuple[str, ...] = ()
    legacy: dict = field(default_factory=dict)
    infotext: Callable[[dict], dict] = lambda fields: {}


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


def _prompt_syntax_infotext(fields: dict) -> dict:
    # today's images keep AUTOMATIC1111's plain infotext; another syntax says so
    syntax = fields.get("prompt_syntax", "plain")
    return {} if syntax == "plain" else {"Prompt syntax": syntax}


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
        infotext=lambda fields: {"Model": fields["model"]},
    ),
    Contributor(
        "prompt syntax",
        lambda image: {"prompt_syntax": PROMPT_SYNTAX},
        identity=("prompt_syntax",),
        legacy={"prompt_syntax": "plain"},
        infotext=_prompt_syntax_infotext,
    ),
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
    equal."""
    legacy: dict = {}
    for contributor in CONTRIBUTORS:
        legacy.update(contributor.legacy)
    missing = object()
    values = []
    for key in identity_keys(with_seed):
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
