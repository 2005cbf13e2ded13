"""Classifier-free guidance (Ho & Salimans, 2022), combined here and not in the runtimes.

Each denoising step predicts the noise twice, without the prompt (the negative prompt's
states: "unconditional") and with it, and moves from the first towards the second by
the guidance scale: ``u + scale * (c - u)``. The runtimes only return raw predictions,
so the two rows may come from U-Nets with different context lengths.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..runtimes.base import Networks
from ..text.conditioning import Conditioning


def combine(unconditional: np.ndarray, conditional: np.ndarray, scale: float) -> np.ndarray:
    """``unconditional + scale * (conditional - unconditional)`` in float32."""
    return unconditional + np.float32(scale) * (conditional - unconditional)


def predict_noise(
    networks: Callable[[int], Networks],
    latents: np.ndarray,
    timestep_embeddings: np.ndarray,
    conditioning: Conditioning,
    scale: float | None,
) -> np.ndarray:
    """The guided noise prediction for B latent rows at one step.

    networks: the U-Net for a context length (``networks(L)``), for this image size.
    scale: the guidance scale, or None for the conditional prediction alone (scale 1,
        which needs no unconditional pass).

    When both rows of ``conditioning`` have one length, the U-Net sees 2B rows in one
    call (B unconditional, then B conditional; a runtime may run them one by one), and a
    runtime's fused ``guided`` path is used where it offers one. When the lengths
    differ, each half is its own call on the U-Net of its own context length.
    """
    batch = len(latents)
    positive = np.repeat(conditioning.positive, batch, 0)
    if scale is None:
        return networks(conditioning.positive_length).denoise(
            latents, timestep_embeddings, positive
        )
    negative = np.repeat(conditioning.negative, batch, 0)
    if conditioning.negative_length != conditioning.positive_length:
        unconditional = networks(conditioning.negative_length).denoise(
            latents, timestep_embeddings, negative
        )
        conditional = networks(conditioning.positive_length).denoise(
            latents, timestep_embeddings, positive
        )
        return combine(unconditional, conditional, scale)
    network = networks(conditioning.positive_length)
    both = np.concatenate([latents, latents])
    embeddings = np.concatenate([timestep_embeddings, timestep_embeddings])
    contexts = np.concatenate([negative, positive])
    if network.guided is not None:
        return np.asarray(network.guided(both, embeddings, contexts, np.float32(scale)))
    noise = np.asarray(network.denoise(both, embeddings, contexts))
    unconditional, conditional = np.split(noise, 2)
    return combine(unconditional, conditional, scale)


__all__ = ["combine", "predict_noise"]
