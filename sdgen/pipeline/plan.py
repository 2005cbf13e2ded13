"""What a request will make, known from the model's spec and the config alone, before
any network is built: the size it denoises at, the size of its images (with hires
fix), and the notes that say what it does that the flags do not tell."""

from __future__ import annotations

from ..config import GenerationConfig
from ..families import family_of
from ..images import size_for_image
from ..spec import ModelSpec
from .hires import hires_size
from .img2img import img2img_steps


def base_size(spec: ModelSpec, config: GenerationConfig) -> tuple[int, int]:
    """``(width, height)`` the request denoises at (hires fix's first pass): the
    config's, else the init image's own (with outpainting's borders) rounded to
    multiples of 64, else the model's default."""
    width, height = config.width, config.height
    if (width is None or height is None) and config.init_image is not None:
        image_w, image_h = config.init_image.width, config.init_image.height
        if config.outpaint is not None:
            left, top, right, bottom = config.outpaint
            image_w, image_h = image_w + left + right, image_h + top + bottom
        rounded = size_for_image(image_w, image_h)
        width, height = width or rounded[0], height or rounded[1]
    default = spec.default_size
    return width or default, height or default


def plan_size(spec: ModelSpec, config: GenerationConfig) -> tuple[int, int]:
    """``(width, height)`` of the images ``config`` makes: :func:`base_size`, times the
    hires scale with hires fix. ``ConfigError`` for a hires scale whose size the U-Net
    cannot take, naming the nearest scales that work."""
    width, height = base_size(spec, config)
    return hires_size(width, height, config.hires_scale) if config.hires else (width, height)


def task_notes(spec: ModelSpec, config: GenerationConfig) -> list[str]:
    """One line for each thing this request does that a user could not tell from the
    flags alone: the steps an image task runs, hires fix's sizes, an inpainting model's
    conditioning without a mask."""
    notes = []
    family = family_of(spec)
    if config.init_image is not None:
        run = img2img_steps(config.steps, config.strength)
        notes.append(
            f"{config.image_task}: strength {config.strength:g} runs the last {run} of "
            f"{config.steps} steps (A1111's rule, int(strength x steps))"
        )
        if config.mask is not None and family.inpainting:
            notes.append(f"{spec.name} is an inpainting model: the mask goes to its U-Net")
    elif family.inpainting:
        notes.append(
            f"{spec.name} is an inpainting model and no mask was given: txt2img on "
            "a grey image with an all-ones mask, as A1111 does"
        )
    if config.hires:
        width, height = base_size(spec, config)
        target_w, target_h = plan_size(spec, config)
        steps = config.hires_steps or config.steps
        run = img2img_steps(steps, config.hires_denoise)
        notes.append(
            f"hires fix: {width}x{height} enlarged to {target_w}x{target_h} "
            f"({config.hires_upscaler}), then {run} of {steps} steps at denoise "
            f"{config.hires_denoise:g}"
        )
    return notes


__all__ = ["base_size", "plan_size", "task_notes"]
