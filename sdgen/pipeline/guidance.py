"""Classifier-free guidance (Ho & Salimans, 2022), combined here and not in the runtimes.

Each denoising step predicts the noise twice, without the prompt (the negative prompt's
states: "unconditional") and with it, and moves from the first towards the second by
the guidance scale: ``u + scale * (c - u)``. The runtimes only return raw predictions,
so the two rows may come from U-Nets with different context lengths.

A prompt and a negative prompt of different lengths (77·k and 77·j tokens) run as two
calls, each on the U-Net of its own length, as A1111 runs them by default. Where the
runtime offers a fused ``guided`` call (TensorFlow on a GPU), the two contexts are first
repeated along the token axis to their least common multiple, as ComfyUI does
(``comfy/conds.py``, see ``../shared/PROMPTS.md``), so one fused call serves both rows.
That changes nothing: a context repeated r times gives every key and value r times, so
each softmax weight is divided by r and the weighted sum of the values is the same
(``tests/test_guidance.py`` checks it numerically against the separate calls).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ..runtimes.base import Networks
from ..text.conditioning import Conditioning

#: ComfyUI's bound: contexts are repeated to a common length only when it is at most this
#: many times the shorter one; beyond it the attention over the repeated context costs
#: more than the second call saves.
MAX_REPEAT = 4


def combine(unconditional: np.ndarray, conditional: np.ndarray, scale: float) -> np.ndarray:
    """``unconditional + scale * (conditional - unconditional)`` in float32."""
    return unconditional + np.float32(scale) * (conditional - unconditional)


def common_length(first: int, second: int) -> int | None:
    """The least common multiple of two context lengths, or None when it is more than
    ``MAX_REPEAT`` times the shorter one (77 and 154 give 154; 77 and 385 give None)."""
    length = math.lcm(first, second)
    return length if length <= MAX_REPEAT * min(first, second) else None


def repeat_context(states: np.ndarray, length: int) -> np.ndarray:
    """``states`` (B, L, C) repeated along the token axis to ``length`` (a multiple of L)."""
    return np.tile(states, (1, length // states.shape[1], 1))


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
    runtime's fused ``guided`` path is used where it offers one. When the lengths differ,
    each half is its own call on the U-Net of its own context length, unless the runtime
    offers the fused path and the lengths have a common multiple within ``MAX_REPEAT``
    times the shorter: then both contexts are repeated to it and make one fused call.
    """
    batch = len(latents)
    positive = np.repeat(conditioning.positive, batch, 0)
    if scale is None:
        return networks(conditioning.positive_length).denoise(
            latents, timestep_embeddings, positive
        )
    negative = np.repeat(conditioning.negative, batch, 0)
    lengths = (conditioning.negative_length, conditioning.positive_length)
    if lengths[0] != lengths[1]:
        length = common_length(*lengths)
        # the longer row's U-Net is needed either way; asking it whether the runtime
        # fuses builds no network that the separate calls would not use
        if length is None or networks(max(lengths)).guided is None:
            unconditional = networks(lengths[0]).denoise(latents, timestep_embeddings, negative)
            conditional = networks(lengths[1]).denoise(latents, timestep_embeddings, positive)
            return combine(unconditional, conditional, scale)
        negative, positive = repeat_context(negative, length), repeat_context(positive, length)
    network = networks(positive.shape[1])
    both = np.concatenate([latents, latents])
    embeddings = np.concatenate([timestep_embeddings, timestep_embeddings])
    contexts = np.concatenate([negative, positive])
    if network.guided is not None:
        return np.asarray(network.guided(both, embeddings, contexts, np.float32(scale)))
    noise = np.asarray(network.denoise(both, embeddings, contexts))
    unconditional, conditional = np.split(noise, 2)
    return combine(unconditional, conditional, scale)


__all__ = ["MAX_REPEAT", "combine", "common_length", "predict_noise", "repeat_context"]
