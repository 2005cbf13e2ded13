"""The image tasks' part of reading a request, before any weights load: init images and
masks read once, the output size an init image implies, and the refusals and notes of
img2img, inpainting, outpainting and hires fix.

- ``read_images(settings, folder)``: the settings with ``init_image`` and ``mask`` read
  into ``ImageInput``s once (a path relative to ``folder``: a prompts file's own), so a
  sweep or every image of a batch never reads the file again.
- ``sized(config, spec)``: the config with the size it makes filled in where
  ``--width/--height`` are not given: an init image's own (after outpainting's
  borders) rounded to multiples of 64, else the model's default
  (``sdgen.pipeline.plan.base_size``). The planner fills it in, so the records, names
  and the pipeline all see the one size.
- ``check_image_task(config, spec)``: refuses, with a one-line ``ConfigError``, a mask
  with nothing to repaint and a hires size the U-Net cannot take (naming the nearest
  scales that work; ``sdgen.pipeline.plan.plan_size``).
- ``image_task_notes(config)``: the lines that say what sdgen did with the image
  (size chosen from it, resized, mask resized with it).

A mask whose size differs from the init image is not refused: it is resized with the
image's geometry (the same ``--resize`` to the same output size), so the two stay
aligned, and a note says so.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import SIZE_MULTIPLE, GenerationConfig
from ..errors import ConfigError
from ..images import ImageInput, is_empty, resize_note
from ..images.source import mask_array
from ..pipeline.plan import base_size, plan_size
from ..spec import ModelSpec

if TYPE_CHECKING:
    from .work import Job

#: The settings that hold an image, and what each is called in messages.
IMAGE_SETTINGS = {"init_image": "init image", "mask": "mask"}


def read_images(settings: dict, folder: Path | None = None) -> dict:
    """``settings`` with each image setting read into an ``ImageInput`` (a relative path
    taken from ``folder`` when given); ``ImageInputError`` when one cannot be read."""
    settings = dict(settings)
    for key, what in IMAGE_SETTINGS.items():
        value = settings.get(key)
        if value is None or isinstance(value, ImageInput):
            continue
        if isinstance(value, str | Path):
            value = Path(value).expanduser()
            if folder is not None and not value.is_absolute():
                value = Path(folder) / value
        settings[key] = ImageInput.of(value, what)
    return settings


def check_image_task(config: GenerationConfig, spec: ModelSpec) -> None:
    """Refuse, before any work, what ``config`` (of the model ``spec``) asks of an image
    task that cannot be done (``ConfigError``): a mask with nothing to repaint, a hires
    fix whose size the U-Net cannot take."""
    if config.mask is not None and is_empty(mask_array(config.mask)):
        raise ConfigError(
            f"mask {config.mask.label} is all black, so there is nothing to repaint; "
            "white marks what is repainted"
        )
    plan_size(spec, config)


def sized(config: GenerationConfig, spec: ModelSpec) -> GenerationConfig:
    """``config`` with its width and height set: the given ones, else the init image's
    rounded to multiples of 64, else the model's default (``plan.base_size``)."""
    if config.width is not None and config.height is not None:
        return config
    width, height = base_size(spec, config)
    return replace(config, width=width, height=height)


def image_task_notes(config: GenerationConfig, given: tuple[bool, bool]) -> list[str]:
    """What sdgen does with ``config``'s init image and mask, one line each: the size it
    chose from the image (``given``: whether width and height were given), and each
    resize to the output size (``config.width`` x ``config.height``, filled in)."""
    image = config.init_image
    if image is None:
        return []
    notes = []
    width, height = config.width, config.height
    if not all(given):
        notes.append(
            f"init image {image.label} is {image.width}x{image.height}: making "
            f"{width}x{height} (its size{' with the outpaint borders' if config.outpaint else ''}"
            f", rounded to multiples of {SIZE_MULTIPLE}); --width/--height choose another"
        )
    canvas = (image.width, image.height)
    if config.outpaint is not None:
        left, top, right, bottom = config.outpaint
        canvas = (image.width + left + right, image.height + top + bottom)
    if canvas != (width, height):
        notes.append(resize_note(canvas[0], canvas[1], width, height, config.resize))
    mask = config.mask
    if mask is not None and (mask.width, mask.height) != (image.width, image.height):
        notes.append(
            f"mask {mask.label} is {mask.width}x{mask.height}, the init image "
            f"{image.width}x{image.height}: the mask is resized with the image "
            f"({config.resize} to {width}x{height})"
        )
    return notes


def check_image_tasks(jobs: list[Job]) -> list[str]:
    """Refuse, before any weights load, what the image tasks of ``jobs`` cannot do (an
    all-black mask, a hires size the U-Net cannot take: ``ConfigError``, naming a
    prompts-file line), and return the notes of what is done with their images (the
    size chosen from an init image, resizes), each once; see
    :mod:`sdgen.batch.image_task`."""
    from ..catalog import get_model_spec
    from ..errors import UsageError

    notes: dict[str, None] = {}
    seen: set[int] = set()
    for job in jobs:
        config = job.config
        if id(config) in seen or (config.init_image is None and not config.hires):
            continue
        seen.add(id(config))
        try:
            spec = get_model_spec(job.model)
            full = sized(config, spec)
            check_image_task(full, spec)
        except UsageError as error:
            if job.line_number is None:
                raise
            raise type(error)(f"line {job.line_number}: {error}") from None
        given = (config.width is not None, config.height is not None)
        notes.update(dict.fromkeys(image_task_notes(full, given)))
    return list(notes)
