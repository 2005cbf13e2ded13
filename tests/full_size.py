"""Full-size SD v1 networks with random weights, shared by the slow tests and benchmarks.

Keras' own initialisers give outputs far from what trained weights produce (the decoder
saturates every pixel), so weights are drawn with fan-in scaling from a seeded NumPy
generator, as the tiny model's are: activations keep their scale and images show detail,
which makes pixel comparisons meaningful.
"""

from __future__ import annotations

from sdgen import models
from sdgen.catalog import get_model_spec
from sdgen.models import _fill_deterministically


def full_size_networks(height: int, width: int, seed: int = 0):
    """(text encoder, diffusion model, decoder) of keras_cv's SD v1, randomly filled."""
    spec = get_model_spec("sd-v1.4")
    networks = (
        models.build_text_encoder(spec),
        models.build_diffusion_model(spec, height, width),
        models.build_decoder(spec, height, width),
    )
    for offset, network in enumerate(networks):
        _fill_deterministically(network, seed + offset)
    return networks
