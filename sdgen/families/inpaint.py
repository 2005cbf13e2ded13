"""Inpainting variants: SD 1.x's, SD 2.x's and tiny's networks with a U-Net that takes
9 input channels (the noisy latents, the mask and the masked image's latents), as the
RunwayML SD 1.5 and Stability SD 2 inpainting checkpoints are made. Everything else
(text encoder, widths, tensor names, decoder) is their base family's, so each is that
record with ``in_channels`` changed, not a copy.
"""

from __future__ import annotations

from dataclasses import replace

from .base import INPAINTING_CHANNELS, Family
from .sd1 import SD1
from .sd2 import SD2
from .tiny import TINY


def inpainting_variant(family: Family, **changes) -> Family:
    """``family``'s inpainting variant, named ``<family>-inpainting``; ``changes``
    replace more fields."""
    return replace(
        family,
        name=f"{family.name}-inpainting",
        in_channels=INPAINTING_CHANNELS,
        variant_of=family.name,
        **changes,
    )


SD1_INPAINTING = inpainting_variant(SD1)
#: SD 2's inpainting checkpoint predicts epsilon at 512 px, and its single file does not
#: say so: diffusers' single-file loader takes every 9-channel SD 2 file for it
#: (``infer_diffusers_model_type``: "inpainting_v2"), rather than guessing by global step.
SD2_INPAINTING = inpainting_variant(SD2, v_prediction_size=None, single_files_say_prediction=True)
TINY_INPAINTING = inpainting_variant(TINY)

INPAINTING_FAMILIES = (SD1_INPAINTING, SD2_INPAINTING, TINY_INPAINTING)
