"""The image tasks' part of reading a request, before any weights load: init images and
masks read once, the output size an init image implies, and the refusals and notes of
img2img, inpainting, outpainting and hires fix.

- ``read_images(settings, folder)``: the settings with ``init_image`` and ``mask`` read
  into ``ImageInput``s once (a path relative to ``folder``: a prompts file's own), so a
  sweep or every image of a batch never reads the file again.
- ``image_size(config)``: the size an init image makes when ``--width/--height`` are not
  given: its own (after outpainting's borders) rounded to multiples of 64. The planner
  fills it in, so the records, names and the pipeline all see the one size.
- ``check_image_task(job, default_size)``: refuses, with a one-line ``ConfigError``,
  a mask with nothing to repaint and a hires size the U-Net cannot take (naming the
  nearest scales that work), and asks the pipeline's own ``Pipeline.plan_size`` where it
  has one.
- ``image_task_notes(config)``: the lines that say what sdgen did with the image
  (size chosen from it, resized, mask resized with it).

A mask whose size differs from the init image is not refused: it is resized with the
image's geometry (the same ``--resize`` to the same output size), so the two stay
aligned, and a note says so.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from ..config import MAX_SIZE, SIZE_MULTIPLE, GenerationConfig
from ..errors import ConfigError
from ..images import ImageInput
from ..pipeline.hires import hires_size

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


def round_size(width: int, height: int) -> tuple[int, int]:
    """``(width, height)`` each rounded to the nearest multiple of 64, at least 64 (the
    images module's ``size_for_image`` where it exists)."""
    try:
        from ..images.resize import size_for_image
    except ImportError:
        size_for_image = None
    if size_for_image is not None:
        return tuple(size_for_image(width, height))

    def nearest(value: int) -> int:
        return min(MAX_SIZE, max(SIZE_MULTIPLE, round(value / SIZE_MULTIPLE) * SIZE_MULTIPLE))

    return nearest(width), nearest(height)


def image_size(config: GenerationConfig) -> tuple[int, int] | None:
    """The output size ``config``'s init image asks for where the config gives none:
    the image's size plus any outpainting borders, rounded to multiples of 64; None for
    txt2img."""
    image = config.init_image
    if image is None:
        return None
    width, height = image.width, image.height
    if config.outpaint is not None:
        left, top, right, bottom = config.outpaint
        width, height = width + left + right, height + top + bottom
    rounded = round_size(width, height)
    return (config.width or rounded[0], config.height or rounded[1])


def mask_is_empty(mask: ImageInput) -> bool:
    """Whether ``mask`` repaints nothing: ``sdgen.images.is_empty`` of its
    ``mask_array`` where the images module has them, else every pixel black."""
    try:
        from ..images import mask as mask_module
        from ..images.source import mask_array
    except ImportError:
        mask_module = None
    if mask_module is not None and hasattr(mask_module, "is_empty"):
        return bool(mask_module.is_empty(mask_array(mask)))
    return not np.any(mask.pixels)


def check_image_task(config: GenerationConfig, model: str, default_size: int) -> None:
    """Refuse, before any work, what ``config`` (of ``model``, whose default size is
    ``default_size``) asks of an image task that cannot be done: a mask with nothing to
    repaint, a hires fix whose size the U-Net cannot take (``ConfigError``); then the
    pipeline's ``plan_size`` rule, where it has one."""
    if config.mask is not None and mask_is_empty(config.mask):
        raise ConfigError(
            f"mask {config.mask.label} is all black, so there is nothing to repaint; "
            "white marks what is repainted"
        )
    if config.hires:
        width = config.width or default_size
        height = config.height or default_size
        hires_size(width, height, config.hires_scale)
    pipeline_size(config, model)


def pipeline_size(config: GenerationConfig, model: str) -> tuple[int, int] | None:
    """The pipeline's ``Pipeline.plan_size(config)`` for ``model``, asked before any
    network is built: on a pipeline that has the model's spec and family but no
    networks. None where the pipeline has no such rule, or needs its networks for it;
    its ``ConfigError`` is raised."""
    from ..pipeline import Pipeline

    plan_size = getattr(Pipeline, "plan_size", None)
    if plan_size is None:
        return None
    from ..catalog import get_model_spec
    from ..families import family_of

    spec = get_model_spec(model)
    bare = Pipeline.__new__(Pipeline)
    bare.spec, bare.family = spec, family_of(spec)
    try:
        return tuple(plan_size(bare, config))
    except (AttributeError, TypeError):  # it needs a loaded pipeline: checked there
        return None


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
        notes.append(_resize_note(image, canvas, width, height, config.resize))
    mask = config.mask
    if mask is not None and (mask.width, mask.height) != (image.width, image.height):
        notes.append(
            f"mask {mask.label} is {mask.width}x{mask.height}, the init image "
            f"{image.width}x{image.height}: the mask is resized with the image "
            f"({config.resize} to {width}x{height})"
        )
    return notes


_RESIZE_WORDS = {
    "crop": "scaled to cover it, the overflow cut evenly",
    "fit": "scaled to fit inside, the border filled from its edges",
    "stretch": "each side scaled on its own",
}


def _resize_note(image: ImageInput, canvas, width: int, height: int, mode: str) -> str:
    try:
        from ..images.resize import resize_note
    except ImportError:
        resize_note = None
    if resize_note is not None:
        note = resize_note(canvas[0], canvas[1], width, height, mode)
        if note:
            return note
    return (
        f"init image {canvas[0]}x{canvas[1]} resized to {width}x{height} "
        f"({mode}: {_RESIZE_WORDS[mode]})"
    )


def sized(config: GenerationConfig, default_size: int) -> GenerationConfig:
    """``config`` with its width and height set: the given ones, else the init image's
    (``image_size``), else ``default_size`` (the model's)."""
    if config.width is not None and config.height is not None:
        return config
    from_image = image_size(config)
    width, height = from_image or (default_size, default_size)
    return replace(config, width=config.width or width, height=config.height or height)
