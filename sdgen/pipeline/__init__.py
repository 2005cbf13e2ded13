"""Generation tasks over injected networks: txt2img, img2img, inpainting, hires fix.

- :mod:`.stages`: per-image generators, initial latents, the timestep embedding, pixels.
- :mod:`.guidance`: classifier-free guidance, combined from raw U-Net predictions.
- :mod:`.generate`: the ``Pipeline``: encode, draw latents (or start from an image),
  denoise, decode.
- :mod:`.plan`: the sizes and notes of a request, known before any network is built.
- :mod:`.start`: what each pass starts from, by :mod:`.img2img`, :mod:`.inpaint` and
  :mod:`.hires`.
- :mod:`.loading`: ``load_pipeline``, which resolves weights and builds the networks.
"""

from __future__ import annotations

from ..runtimes.tensorflow import DeviceSettings, detect_device
from .generate import GeneratedImage, Pipeline
from .loading import load_pipeline
from .stages import initial_latents, timestep_embedding

__all__ = [
    "DeviceSettings",
    "GeneratedImage",
    "Pipeline",
    "detect_device",
    "initial_latents",
    "load_pipeline",
    "timestep_embedding",
]
