"""Generation tasks over injected networks: text-to-image today.

- :mod:`.stages`: per-image generators, initial latents, the timestep embedding, pixels.
- :mod:`.guidance`: classifier-free guidance, combined from raw U-Net predictions.
- :mod:`.txt2img`: the ``Pipeline``: encode, draw latents, denoise, decode.
- :mod:`.loading`: ``load_pipeline``, which resolves weights and builds the networks.
"""

from __future__ import annotations

from ..runtimes.tensorflow import DeviceSettings, detect_device
from .loading import load_pipeline
from .stages import initial_latents, timestep_embedding
from .txt2img import GeneratedImage, Pipeline

__all__ = [
    "DeviceSettings",
    "GeneratedImage",
    "Pipeline",
    "detect_device",
    "initial_latents",
    "load_pipeline",
    "timestep_embedding",
]
