"""The front door: :func:`convert_checkpoint` reads, detects, describes and maps one
checkpoint into a :class:`ConvertedCheckpoint` (its weight lists and what it is)."""

from __future__ import annotations

import collections.abc

from ..errors import UsageError
from ..families import FAMILIES
from .detect import PREDICTION_TYPES, describe_family, detect
from .mapping import map_weights
from .readers import read_with_metadata


class ConvertedCheckpoint(collections.abc.Mapping):
    """Converted weights (``weights[network]``: keras_cv weight lists keyed
    ``text_encoder``, ``diffusion_model``, ``decoder`` and, for a checkpoint that has
    the VAE's encoder (almost all do), ``encoder``) and what the checkpoint is.

    It reads as the ``weights`` mapping itself, so code written for the plain dictionary
    :func:`convert_checkpoint` used to return keeps working.
    """

    def __init__(self, weights, family, prediction_type, default_size, layout):
        self.weights = weights
        self.family = family
        self.prediction_type = prediction_type
        self.default_size = default_size
        self.layout = layout

    def __getitem__(self, network):
        return self.weights[network]

    def __iter__(self):
        return iter(self.weights)

    def __len__(self):
        return len(self.weights)

    @property
    def roles(self) -> tuple[str, ...]:
        """The networks converted, in the order ``sdgen.spec`` lists roles."""
        from ..spec import IMAGE_ROLES, ROLES

        return tuple(role for role in (*ROLES, *IMAGE_ROLES) if role in self.weights)

    def describe(self) -> dict:
        """The same dictionary as :func:`describe`."""
        return {
            "family": self.family,
            "prediction_type": self.prediction_type,
            "default_size": self.default_size,
        }

    def __repr__(self):
        return (
            f"ConvertedCheckpoint(family={self.family!r}, prediction_type="
            f"{self.prediction_type!r}, default_size={self.default_size}, layout={self.layout!r})"
        )


def convert_checkpoint(path, *, prediction_type: str | None = None) -> ConvertedCheckpoint:
    """Read, detect, describe and map the checkpoint at ``path``.

    ``prediction_type`` (``"epsilon"`` or ``"v_prediction"``) overrides what
    :func:`describe` guesses; for an SD 2.x single file the default size then follows
    it (768 for v-prediction, 512 for epsilon).
    """
    if prediction_type is not None and prediction_type not in PREDICTION_TYPES:
        raise UsageError(
            f"prediction type must be one of {', '.join(PREDICTION_TYPES)}, not {prediction_type!r}"
        )
    tensors, meta = read_with_metadata(path)
    family, layout = detect(tensors)
    info = describe_family(family, meta)
    if prediction_type is not None and prediction_type != info["prediction_type"]:
        info["prediction_type"] = prediction_type
        if not (meta.get("unet_config") or {}).get("sample_size"):
            info["default_size"] = FAMILIES[family].size_for(prediction_type)
    weights = map_weights(tensors, layout, family, consume=True)
    del tensors
    return ConvertedCheckpoint(
        weights, info["family"], info["prediction_type"], info["default_size"], layout
    )
