"""Output file names: the ``--name-template`` fields, and an image's path from them."""

from __future__ import annotations

import string
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..output.files import slugify
from ..samplers import get_sampler

if TYPE_CHECKING:
    from .work import Job, OutputOptions

#: How files are named when ``--out`` is not given.
NAME_TEMPLATE = "{index:05d}-{seed}-{slug}.png"
#: The fields a name template may use.
TEMPLATE_FIELDS = (
    "index",
    "seed",
    "slug",
    "line",
    "k",
    "model",
    "sampler",
    "steps",
    "width",
    "height",
)


def check_template(template: str) -> None:
    """Raise ``ConfigError`` unless ``template`` is a format string of known fields that
    holds ``{index}`` or ``{seed}``."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as error:
        raise ConfigError(f"bad --name-template {template!r}: {error}") from error
    unknown = sorted({name for name in fields if name not in TEMPLATE_FIELDS})
    if unknown:
        raise ConfigError(
            f"unknown field(s) {', '.join(unknown)} in --name-template; "
            f"use {', '.join(TEMPLATE_FIELDS)}"
        )
    if "index" not in fields and "seed" not in fields:
        raise ConfigError("--name-template needs {index} or {seed}, or names would collide")


def image_path(
    output: OutputOptions, index: int, total: int, job: Job, k: int, slug: str | None = None
) -> Path:
    """The path of image ``k`` of ``job``, number ``index`` of ``total`` in the run;
    ``slug`` is ``slugify(job.config.prompt)`` when the caller has it already. Raises
    ``ConfigError`` for an ``--out`` that is not a PNG or a name that leaves the folder."""
    config = job.config
    if output.out is not None:
        out = output.out
        if out.suffix.lower() != ".png":
            raise ConfigError(f"--out {out} must end in .png")
        return out if total == 1 else out.with_name(f"{out.stem}-{index}{out.suffix}")
    name = output.name_template.format(
        index=index,
        seed=config.seed + k,
        slug=slugify(config.prompt) if slug is None else slug,
        line=job.line_number or 0,
        k=k,
        model=slugify(job.model),
        sampler=get_sampler(config.sampler).name,
        steps=config.steps,
        width=config.width,
        height=config.height,
    )
    if not name.lower().endswith(".png"):
        name += ".png"
    # a template may make subfolders, never leave the output folder
    if ".." in Path(name).parts or Path(name).is_absolute():
        raise ConfigError(f"--name-template makes {name!r}, which leaves --outdir")
    return output.outdir / name
