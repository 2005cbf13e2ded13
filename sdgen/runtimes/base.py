"""What the pipeline asks of a runtime: the ``Backend`` protocol and its ``Networks``.

A backend runs a model's three networks. The pipeline encodes text with
``backend.encode``, then asks ``backend.networks(signature)`` for the U-Net and decoder
specialised to one ``NetworkSignature`` (image size, context length, input channels) and
calls them; an image task (img2img, inpainting) first turns its images into latents with
``backend.encode_images`` (the VAE encoder, built or loaded only then). Classifier-free
guidance is the pipeline's business (:mod:`sdgen.pipeline.guidance`): ``denoise``
returns one raw prediction per row it is given, so the unconditional and conditional
rows may come from networks with different context lengths.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .signature import NetworkSignature

#: ``denoise(latents (N, h, w, c), timestep_embeddings (N, 320), contexts (N, L, C))``:
#: the U-Net's noise prediction for each of the N rows, (N, h, w, 4) float32. Every row
#: is computed as if alone (see each runtime for how exactly).
Denoise = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
#: ``guided(latents (2B, ...), timestep_embeddings (2B, 320), contexts (2B, L, C),
#: scale)``: B unconditional rows then the same B latents conditional, combined into B
#: guided predictions ``u + scale * (c - u)`` inside one compiled call.
GuidedDenoise = Callable[[np.ndarray, np.ndarray, np.ndarray, np.float32], np.ndarray]
#: ``decode(latents (N, h, w, 4))``: images in [-1, 1], (N, H, W, 3) float32.
Decode = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Networks:
    """The compiled calls for one ``NetworkSignature``.

    guided: an optional fused fast path that a runtime may offer where combining the
        guidance inside its own compiled step is measurably faster (TensorFlow's fused
        call on a GPU, see :mod:`sdgen.runtimes.tensorflow`). The pipeline uses it when
        both rows of the conditioning have one context length, or lengths it can repeat
        to a common one (see :mod:`sdgen.pipeline.guidance`); the result must
        equal ``denoise`` followed by the pipeline's own combination up to rounding.
    """

    signature: NetworkSignature
    denoise: Denoise = field(repr=False)
    decode: Decode = field(repr=False)
    guided: GuidedDenoise | None = field(default=None, repr=False)


class Backend(Protocol):
    """A runtime's side of the pipeline. ``auto_batch_size(height, width) -> int`` may
    be added for ``--batch-size auto`` (without it the pipeline uses 1)."""

    def encode(
        self,
        tokens: np.ndarray,
        positions: np.ndarray,
        clip_skip: int = 1,
        vectors: np.ndarray | None = None,
        mask: np.ndarray | None = None,
    ) -> np.ndarray:
        """Text states (N, 77, C) of N rows of 77 CLIP token ids and their positions.

        clip_skip: take the states of the layer ``clip_skip - 1`` before the last,
            through the final layer norm (A1111's "Clip skip").
        vectors, mask: (N, 77, C) float32 and (N, 77) bool: textual-inversion vectors to
            use instead of the token embeddings where ``mask`` is set.

        The pipeline passes the keywords only when they are not the defaults, so a
        backend that has neither feature may take just ``tokens`` and ``positions``.
        """
        ...

    def networks(self, signature: NetworkSignature) -> Networks:
        """The U-Net and decoder for ``signature``, built or loaded on first use."""
        ...

    def encode_images(self, images: np.ndarray) -> np.ndarray:
        """Latents (N, H/8, W/8, 4) float32 of images (N, H, W, 3) float32 in [-1, 1]:
        the VAE posterior's mean times 0.18215, as keras_cv's ``ImageEncoder``. The
        encoder is built or loaded on the first call (a text-to-image run never pays
        for it); ``MissingEncoderError`` where the model has none."""
        ...


def check_images(images) -> np.ndarray:
    """``images`` as float32 (N, H, W, 3) with H and W multiples of 8, as
    ``encode_images`` takes them; ``ValueError`` otherwise (a caller's mistake)."""
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[-1] != 3 or len(images) == 0:
        raise ValueError(f"encode_images takes images (N, H, W, 3), not {images.shape}")
    if images.shape[1] % 8 or images.shape[2] % 8:
        raise ValueError(f"image sizes must be multiples of 8, not {images.shape[1:3]}")
    return images


def inserted_vectors(tokens, vectors, mask, width: int | None):
    """``(vectors (N, L, C) float32, mask (N, L, 1) float32)`` for a text-states model
    (see :mod:`sdgen.networks.text_states`): the ones given, or zeros (none put in) of
    ``width`` when ``vectors`` is None."""
    if vectors is None:
        vectors = np.zeros((*tokens.shape, width), np.float32)
        mask = np.zeros(tokens.shape, np.float32)
    return np.asarray(vectors, np.float32), np.asarray(mask, np.float32).reshape(*tokens.shape, 1)


__all__ = [
    "Backend",
    "Decode",
    "Denoise",
    "GuidedDenoise",
    "Networks",
    "check_images",
    "inserted_vectors",
]
