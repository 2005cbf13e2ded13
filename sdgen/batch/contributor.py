"""The record of one feature's part of what an image is (see :mod:`.identity`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .work import PlannedImage


@dataclass(frozen=True)
class Contributor:
    """One feature's part of an image's record.

    name: what the feature is, for messages and ``register``.
    fields: ``fields(image)``: the manifest fields this feature adds for ``image``.
    identity: the keys of ``fields`` that must equal an earlier record's for a resumed
        run to skip the image (the rest are only recorded).
    legacy: the value a key takes in a record that lacks it (written before the feature
        existed); a key without one must be present to match.
    infotext: ``infotext(fields)``: the ``Key: value`` settings this feature adds to the
        PNG's infotext, from the image's complete fields [none].
    seedless: ``seedless(fields)``: identity values that stand in for those of any
        contributor when the seed is left out, for fields the seed decides (a random
        template's prompts): what an earlier run of the same request shares [none].
    """

    name: str
    fields: Callable[[PlannedImage], dict]
    identity: tuple[str, ...] = ()
    legacy: dict = field(default_factory=dict)
    infotext: Callable[[dict], dict] = lambda fields: {}
    seedless: Callable[[dict], dict] = lambda fields: {}


__all__ = ["Contributor"]
