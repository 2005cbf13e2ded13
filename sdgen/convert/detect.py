"""Recognise what a checkpoint is from its tensors and what it says about itself.

:func:`detect` names the family (SD 1.x by its 768-wide cross-attention context, SD 2.x
by its 1024-wide one; their inpainting variants by conv_in's 9 input channels) and the
layout (single file or diffusers folder), and refuses the kinds sdgen cannot convert
(SDXL, unCLIP, LoRA). :func:`describe` adds the
prediction type and the default image size.
"""

from __future__ import annotations

import numpy as np

from ..families import FAMILIES, variant_with_channels
from .errors import NotACheckpointError, UnsupportedCheckpointError
from .readers import shapes_with_metadata

_LDM_CONV_IN = "model.diffusion_model.input_blocks.0.0.weight"
_DIFFUSERS_CONV_IN = "unet.conv_in.weight"
_LDM_CONTEXT = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
_DIFFUSERS_CONTEXT = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"


#: The family of a U-Net by the width of its cross-attention context (SD 1.x: 768,
#: SD 2.x: 1024, tiny: 64), then by its input channels (9: the family's inpainting
#: variant); the weight tables then check every other shape.
_FAMILY_BY_CONTEXT = {
    family.context_width: family.name for family in FAMILIES.values() if family.variant_of is None
}
#: The U-Net input channels sdgen converts: text-to-image (4) and inpainting (9).
_CHANNELS = sorted({family.in_channels for family in FAMILIES.values()})


def detect(tensors: dict[str, np.ndarray]) -> tuple[str, str]:
    """(family, layout) of a checkpoint: family ``"sd-v1"`` (context width 768) or
    ``"sd-v2"`` (context width 1024), or their inpainting variants ``"sd-v1-inpainting"``
    and ``"sd-v2-inpainting"`` when conv_in takes 9 channels (as diffusers' single-file
    loader tells them apart); layout ``"ldm"`` (single file, CompVis naming) or
    ``"diffusers"`` (a folder read by :func:`read_checkpoint`).

    Raises :class:`UnsupportedCheckpointError` for SDXL, U-Nets taking neither 4 nor 9
    channels and LoRA files, and :class:`NotACheckpointError` for anything else.
    """
    keys = tensors.keys()
    if "model.diffusion_model.label_emb.0.0.weight" in tensors and not any(
        k.startswith("conditioner.embedders") for k in keys
    ):
        raise UnsupportedCheckpointError(
            "this U-Net takes an extra class/image embedding (label_emb: an unCLIP or "
            "other image-variation checkpoint); sdgen converts text-to-image SD 1.x and "
            "2.x only"
        )
    if any(k.startswith("conditioner.embedders") or "add_embedding" in k for k in keys):
        raise UnsupportedCheckpointError(
            "this is a Stable Diffusion XL checkpoint; sdgen converts SD 1.x and 2.x only"
        )
    if _LDM_CONV_IN in tensors:
        layout, conv_in, context = "ldm", _LDM_CONV_IN, _LDM_CONTEXT
    elif _DIFFUSERS_CONV_IN in tensors:
        layout, conv_in, context = "diffusers", _DIFFUSERS_CONV_IN, _DIFFUSERS_CONTEXT
    else:
        if any("lora_" in k or ".lora." in k for k in keys):
            raise UnsupportedCheckpointError(
                "this is a LoRA file, not a full checkpoint; sdgen cannot apply LoRAs"
            )
        raise NotACheckpointError(
            "not a Stable Diffusion checkpoint: no U-Net (model.diffusion_model.*) found"
        )
    if any("lora_" in k for k in keys):
        raise UnsupportedCheckpointError(
            "this checkpoint has LoRA weights (keys with 'lora_') merged in; not supported"
        )
    channels = tensors[conv_in].shape[1] if tensors[conv_in].ndim == 4 else None
    if channels not in _CHANNELS:
        raise UnsupportedCheckpointError(
            f"the U-Net takes {channels} input channels ({conv_in}); expected 4 "
            "(text-to-image) or 9 (inpainting)"
        )
    if context not in tensors or tensors[context].ndim != 2:
        raise NotACheckpointError(f"not a Stable Diffusion checkpoint: no {context}")
    width = tensors[context].shape[1]
    if width not in _FAMILY_BY_CONTEXT:
        raise UnsupportedCheckpointError(
            f"unknown Stable Diffusion variant: context width {width} in {context}"
        )
    family = variant_with_channels(_FAMILY_BY_CONTEXT[width], channels)
    if family is None:
        raise UnsupportedCheckpointError(
            f"no {_FAMILY_BY_CONTEXT[width]} variant takes {channels} input channels ({conv_in})"
        )
    return family.name, layout


#: The global step of the SD 2.0 512-base single file; diffusers' converter takes any
#: other SD 2.x single file for a 768-v (v-prediction) model.
SD2_BASE_GLOBAL_STEP = 875000
PREDICTION_TYPES = ("epsilon", "v_prediction")


def describe_family(family: str, meta: dict) -> dict:
    """:func:`describe`'s dictionary for a checkpoint of ``family`` from what it says
    about itself (``meta``: its ``global_step``, ``scheduler`` and ``unet_config``, as
    :func:`~sdgen.convert.readers.read_with_metadata` returns them)."""
    scheduler = meta.get("scheduler") or {}
    unet_config = meta.get("unet_config") or {}
    prediction = scheduler.get("prediction_type")
    if prediction is not None and prediction not in PREDICTION_TYPES:
        raise UnsupportedCheckpointError(
            f"the checkpoint's scheduler predicts {prediction!r}; sdgen supports "
            + " and ".join(PREDICTION_TYPES)
        )
    if prediction is None:
        if not FAMILIES[family].single_files_say_prediction and meta.get("scheduler") is None:
            # diffusers' heuristic for single files (convert_from_ckpt, single_file_utils)
            base = meta.get("global_step") == SD2_BASE_GLOBAL_STEP
            prediction = "epsilon" if base else "v_prediction"
        else:
            prediction = "epsilon"
    sample_size = unet_config.get("sample_size")
    if isinstance(sample_size, int) and not isinstance(sample_size, bool) and sample_size > 0:
        size = sample_size * 8
    else:
        size = FAMILIES[family].size_for(prediction)
    return {"family": family, "prediction_type": prediction, "default_size": size}


def describe(path_or_state) -> dict:
    """What a checkpoint is: ``{"family": "sd-v1" | "sd-v2" (or their ``-inpainting``
    variants), "prediction_type": "epsilon" | "v_prediction", "default_size": 512 | 768}``.

    ``path_or_state`` is a checkpoint path (file or diffusers folder) or a dictionary of
    tensors as :func:`read_checkpoint` returns (which may also hold a ``global_step``).

    SD 1.x is epsilon-predicting at 512 pixels, and so are both inpainting families
    (diffusers' single-file loader configures SD 2 inpainting that way). An SD 2.x
    text-to-image single file does not say whether it is the 512 base (epsilon) or the
    768-v model: as diffusers' converter does, a ``.ckpt`` whose top-level
    ``global_step`` is 875000 is taken for the 512 base and anything else (every
    ``.safetensors`` file included) for 768-v; pass
    ``prediction_type`` to :func:`convert_checkpoint` to override. A diffusers folder
    says so itself: ``scheduler/scheduler_config.json``'s ``prediction_type`` (epsilon
    when absent) and ``unet/config.json``'s ``sample_size`` times 8.
    """
    if isinstance(path_or_state, dict):
        meta = {"global_step": None, "scheduler": None, "unet_config": None}
        step = path_or_state.get("global_step")
        if isinstance(step, (int, np.integer)) and not isinstance(step, bool):
            meta["global_step"] = int(step)
        tensors = {k: v for k, v in path_or_state.items() if isinstance(v, np.ndarray)}
    else:
        tensors, meta = shapes_with_metadata(path_or_state)
    family, _layout = detect(tensors)
    return describe_family(family, meta)
