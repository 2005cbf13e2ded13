"""The image tasks' part of an image's record (img2img, inpainting, outpainting, hires
fix): their manifest fields, which of them are the resume identity, and their infotext
settings, A1111's keys where it has them (see :mod:`.identity`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..config import FILL_LABELS, RESIZE_LABELS, UPSCALER_LABELS
from ..output.png import format_number
from .contributor import Contributor

if TYPE_CHECKING:
    from .work import PlannedImage


#: The manifest fields of the image tasks that are part of the resume identity; a
#: record without one (txt2img, or written before image tasks) reads it as None.
IMAGE_TASK_IDENTITY = (
    "init_image_sha256",
    "strength",
    "resize",
    "mask_sha256",
    "mask_blur",
    "inpaint_fill",
    "inpaint_area",
    "inpaint_padding",
    "outpaint",
    "hires",
    "hires_scale",
    "hires_upscaler",
    "hires_steps",
    "hires_denoise",
)
#: How many hex digits of an init image's or mask's sha256 the infotext shows.
SHORT_HASH = 12


def _image_task(image: PlannedImage) -> dict:
    """The image task's fields: only those the task uses (none for plain txt2img), so a
    setting that changes nothing never changes the identity. ``init_image`` and
    ``mask`` are the paths as given (recorded, not identity: the sha256s are)."""
    config = image.job.config
    fields: dict = {}
    if config.init_image is not None:
        fields.update(
            image_task=config.image_task,
            init_image=config.init_image.label,
            init_image_sha256=config.init_image.sha256,
            strength=config.strength,
            resize=config.resize,
        )
    if config.mask is not None:
        fields.update(mask=config.mask.label, mask_sha256=config.mask.sha256)
    if config.mask is not None or config.outpaint is not None:
        masked = config.inpaint_area == "masked"
        fields.update(
            mask_blur=config.mask_blur,
            inpaint_fill=config.inpaint_fill,
            inpaint_area=config.inpaint_area,
            inpaint_padding=config.inpaint_padding if masked else None,
        )
    if config.outpaint is not None:
        fields["outpaint"] = list(config.outpaint)
    if config.hires:
        fields.update(
            hires=True,
            hires_scale=config.hires_scale,
            hires_upscaler=config.hires_upscaler,
            hires_steps=config.hires_steps,  # None: the same as steps
            hires_denoise=config.hires_denoise,
        )
    return fields


def _image_task_infotext(fields: dict) -> dict:
    """A1111's keys where it has them: ``Denoising strength`` (img2img's strength, or
    the hires pass's), ``Mask blur``, ``Masked content`` (when not ``original``),
    ``Inpaint area: Only masked`` with ``Masked area padding``, ``Hires upscale``,
    ``Hires steps`` (when given), ``Hires upscaler``; and sdgen's own for what A1111
    does not write: ``Resize mode`` (A1111's label of the mode), ``Init image sha256``
    and ``Mask sha256`` (the first ``SHORT_HASH`` hex digits), ``Outpaint: "L,T,R,B"``."""
    settings: dict = {}
    if fields.get("init_image_sha256"):
        settings["Denoising strength"] = format_number(fields["strength"])
        settings["Resize mode"] = RESIZE_LABELS[fields["resize"]]
        settings["Init image sha256"] = fields["init_image_sha256"][:SHORT_HASH]
    if fields.get("mask_sha256"):
        settings["Mask sha256"] = fields["mask_sha256"][:SHORT_HASH]
    if fields.get("outpaint"):
        settings["Outpaint"] = '"' + ",".join(str(side) for side in fields["outpaint"]) + '"'
    if fields.get("inpaint_fill") is not None:
        settings["Mask blur"] = fields["mask_blur"]
        if fields["inpaint_fill"] != "original":
            settings["Masked content"] = FILL_LABELS[fields["inpaint_fill"]]
        if fields["inpaint_area"] == "masked":
            settings["Inpaint area"] = "Only masked"
            settings["Masked area padding"] = fields["inpaint_padding"]
    if fields.get("hires"):
        settings["Denoising strength"] = format_number(fields["hires_denoise"])
        settings["Hires upscale"] = format_number(fields["hires_scale"])
        if fields.get("hires_steps") is not None:
            settings["Hires steps"] = fields["hires_steps"]
        settings["Hires upscaler"] = UPSCALER_LABELS[fields["hires_upscaler"]]
    return settings


IMAGE_TASK = Contributor(
    "image task",
    _image_task,
    identity=IMAGE_TASK_IDENTITY,
    legacy=dict.fromkeys(IMAGE_TASK_IDENTITY),
    infotext=_image_task_infotext,
)

__all__ = ["IMAGE_TASK", "IMAGE_TASK_IDENTITY", "SHORT_HASH"]
