"""Full-size SD v1 networks with random weights, shared by the slow tests and benchmarks.

Keras' own initialisers give outputs far from what trained weights produce (the decoder
saturates every pixel), so weights are drawn with fan-in scaling from a seeded NumPy
generator, as the tiny model's are: activations keep their scale and images show detail,
which makes pixel comparisons meaningful.
"""

from __future__ import annotations

from sdgen.catalog import get_model_spec
from sdgen.families import family_of
from sdgen.families.tiny import fill_deterministically


def full_size_networks(height: int, width: int, seed: int = 0):
    """(text encoder, diffusion model, decoder) of SD v1, randomly filled."""
    spec = get_model_spec("sd-v1.4")
    family = family_of(spec)
    roles = ("text_encoder", "diffusion_model", "decoder")
    networks = tuple(family.build(role, spec, height, width) for role in roles)
    for offset, network in enumerate(networks):
        fill_deterministically(network, seed + offset)
    return networks
