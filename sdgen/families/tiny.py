"""``tiny``: SD 1.x's exact layout at small widths, its weights generated from a seed, so
every code path (conversion included) runs in seconds without a download. Its images
look like noise; it proves plumbing, not drawing."""

from __future__ import annotations

import numpy as np

from ..networks.layouts import Attention, Widths
from .base import Family

#: GroupNormalization uses 32 groups, so every width that goes through one is a multiple
#: of 32.
TINY_WIDTHS = Widths(
    text=64, text_layers=2, unet=(32, 64, 64, 64), context=64, decoder=(64, 64, 32, 32)
)


def fill_deterministically(model, seed: int) -> None:
    """Overwrite every weight of ``model`` from a NumPy generator seeded with ``seed``.

    Keras initialisers draw from a global seed generator; filling the weights ourselves
    makes the tiny model identical in every process. Kernels get a fan-in scaled normal
    (He-style, so activations keep their scale through the layers), normalisation scales
    get ones, and biases and offsets small normals so the output is not trivially
    symmetric.
    """
    rng = np.random.default_rng(seed)
    values = []
    for weight in model.weights:
        shape = tuple(weight.shape)
        name = weight.path
        if name.endswith(("gamma", "scale")):
            values.append(np.ones(shape, np.float32))
        elif name.endswith(("beta", "bias", "embeddings")) or len(shape) == 1:
            values.append((0.02 * rng.standard_normal(shape)).astype(np.float32))
        else:
            fan_in = int(np.prod(shape[:-1]))
            std = 1.0 / np.sqrt(fan_in)
            values.append((std * rng.standard_normal(shape)).astype(np.float32))
    model.set_weights(values)


TINY = Family(
    name="tiny",
    widths=TINY_WIDTHS,
    text_heads=2,
    text_activation="quick_gelu",
    attention=Attention(heads=2),
    default_size=128,
    fill=fill_deterministically,
)
