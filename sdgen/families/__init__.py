"""Model families: one ``Family`` record each (``base``) for SD 1.x (``sd1``), SD 2.x
(``sd2``), the generated test model (``tiny``) and the inpainting variants of all three
(``inpaint``: 9-channel U-Nets). A ``ModelSpec`` names its family; ``family_of`` turns
that name into the record."""

from __future__ import annotations

from ..errors import ModelError
from ..spec import ModelSpec
from .base import INPAINTING_CHANNELS, Family
from .inpaint import INPAINTING_FAMILIES
from .sd1 import SD1
from .sd2 import SD2
from .tiny import TINY

FAMILIES: dict[str, Family] = {
    family.name: family for family in (SD1, SD2, TINY, *INPAINTING_FAMILIES)
}


def family_of(spec: ModelSpec) -> Family:
    """The family record of ``spec``; ``ModelError`` for a family sdgen does not know."""
    family = FAMILIES.get(spec.family)
    if family is None:
        raise ModelError(f"model {spec.name!r} has an unknown family {spec.family!r}")
    return family


def variant_with_channels(family: str, in_channels: int) -> Family | None:
    """The family sharing ``family``'s base (itself or its variants) whose U-Net takes
    ``in_channels``; None when there is none (``variant_with_channels("sd-v1", 9)`` is
    ``sd-v1-inpainting``)."""
    base = FAMILIES[family].base_name
    for candidate in FAMILIES.values():
        if candidate.base_name == base and candidate.in_channels == in_channels:
            return candidate
    return None


__all__ = ["FAMILIES", "INPAINTING_CHANNELS", "Family", "family_of", "variant_with_channels"]
