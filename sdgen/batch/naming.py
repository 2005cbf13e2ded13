"""Output file names: the ``--name-template`` fields, and an image's path from them.

In ``--outdir``, ``{index}`` is the folder's running counter, as in AUTOMATIC1111: a new
image takes the next free number, so runs with other settings never land on each other's
files. ``plan`` chooses the numbers (see :mod:`sdgen.batch.resume`); this module only
formats them.
"""

from __future__ import annotations

import re
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
#: The file types an image may be written as (the writer picks the format by suffix).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
#: The leading number of a file name (``00042-7-a-fox.png`` -> 42), as A1111 reads it.
_LEADING_NUMBER = re.compile(r"^(\d+)")


def template_fields(template: str) -> list[str]:
    """The field names ``template`` uses; raises ``ConfigError`` for a bad template."""
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as error:
        raise ConfigError(f"bad --name-template {template!r}: {error}") from error


def check_template(template: str) -> None:
    """Raise ``ConfigError`` unless ``template`` is a format string of known fields that
    holds ``{index}`` or ``{seed}``."""
    fields = template_fields(template)
    unknown = sorted({name for name in fields if name not in TEMPLATE_FIELDS})
    if unknown:
        raise ConfigError(
            f"unknown field(s) {', '.join(unknown)} in --name-template; "
            f"use {', '.join(TEMPLATE_FIELDS)}"
        )
    if "index" not in fields and "seed" not in fields:
        raise ConfigError("--name-template needs {index} or {seed}, or names would collide")


def leading_number(name: str) -> int | None:
    """The number a file name starts with, if it is an image's (None otherwise)."""
    match = _LEADING_NUMBER.match(name)
    if match is None or not name.lower().endswith(IMAGE_SUFFIXES):
        return None
    return int(match.group(1))


def image_path(
    output: OutputOptions,
    index: int,
    total: int,
    job: Job,
    k: int,
    slug: str | None = None,
    number: int | None = None,
) -> Path:
    """The path of image ``k`` of ``job``, number ``index`` of ``total`` in the run;
    ``number`` is what ``{index}`` becomes in ``--outdir`` (the folder's counter; the
    run index when None); ``slug`` is ``slugify(job.config.prompt)`` when the caller has
    it already. Raises ``ConfigError`` for an ``--out`` that is not an image file type
    or a name that leaves the folder."""
    config = job.config
    if output.out is not None:
        out = output.out
        if out.suffix.lower() not in IMAGE_SUFFIXES:
            raise ConfigError(f"--out {out} must end in {_suffixes()}")
        return out if total == 1 else out.with_name(f"{out.stem}-{index}{out.suffix}")
    name = output.name_template.format(
        index=index if number is None else number,
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
    if not name.lower().endswith(IMAGE_SUFFIXES):
        name += ".png"
    # a template may make subfolders, never leave the output folder
    if ".." in Path(name).parts or Path(name).is_absolute():
        raise ConfigError(f"--name-template makes {name!r}, which leaves --outdir")
    return output.outdir / name


def _suffixes() -> str:
    return ", ".join(IMAGE_SUFFIXES[:-1]) + f" or {IMAGE_SUFFIXES[-1]}"
