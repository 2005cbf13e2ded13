"""Model families: one ``Family`` record each (``base``) for SD 1.x (``sd1``), SD 2.x
(``sd2``) and the generated test model (``tiny``). A ``ModelSpec`` names its family;
``family_of`` turns that name into the record."""

from __future__ import annotations

from ..errors import ModelError
from ..spec import ModelSpec
from .base import Family
from .sd1 import SD1
from .sd2 import SD2
from .tiny import TINY

FAMILIES: dict[str, Family] = {family.name: family for family in (SD1, SD2, TINY)}


def family_of(spec: ModelSpec) -> Family:
    """The family record of ``spec``; ``ModelError`` for a family sdgen does not know."""
    family = FAMILIES.get(spec.family)
    if family is None:
        raise ModelError(f"model {spec.name!r} has an unknown family {spec.family!r}")
    return family


__all__ = ["FAMILIES", "Family", "family_of"]
