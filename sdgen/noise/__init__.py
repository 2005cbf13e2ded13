"""Where an image's random numbers come from: its starting noise and the per-step noise
of ancestral samplers.

- ``sdgen`` (the default): NumPy's PCG64 seeded with the image's seed, drawn in the
  latents' own (height, width, channels) order. The same on every machine.
- ``torch-cpu``: exactly what ``torch.manual_seed(seed)`` then ``torch.randn`` of the
  (channels, height, width) latent gives on a CPU (:mod:`.torch_cpu`), as ComfyUI,
  stable-diffusion.cpp's ``--rng cpu``, diffusers with a CPU generator and A1111's "CPU"
  RNG draw it, so a seed gives the same starting noise as there.
- ``torch-cuda``: what ``torch.randn`` of that latent gives on a CUDA GPU (Philox 4x32-10,
  :mod:`.torch_cuda`), A1111's default "GPU" RNG (and its "NV" one) and
  stable-diffusion.cpp's ``--rng cuda``, without a GPU.

Each image has a generator of its own (as A1111's per-image generators), which first
draws the starting noise and then each step's noise, so an image never depends on the
others in its batch. :mod:`.variation` mixes in a variation seed (``--subseed``) and keeps
the composition when the size changes (``--seed-resize-from``).
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .torch_cpu import TorchCpuGenerator
from .torch_cuda import TorchCudaGenerator

#: The ``--rng`` choices; the first is the default.
RNG_KINDS = ("sdgen", "torch-cpu", "torch-cuda")
DEFAULT_RNG = RNG_KINDS[0]
#: A1111's infotext value for each kind it knows (``RNG: CPU``); sdgen writes its own names.
A1111_RNG_LABELS = {"torch-cpu": "CPU", "torch-cuda": "GPU"}
#: Other programs' names taken for a kind: A1111's ``RNG`` labels (its "NV" is its NumPy
#: copy of the GPU's) and stable-diffusion.cpp's ``--rng`` values.
RNG_ALIASES = {"cpu": "torch-cpu", "gpu": "torch-cuda", "nv": "torch-cuda", "cuda": "torch-cuda"}


class LatentNoise:
    """One image's generator: ``draw(height, width)`` is the next standard normal
    (height/8, width/8, 4) float32 latent, in the order the RNG kind defines."""

    def __init__(self, kind: str, seed: int):
        self.kind = check_rng(kind)
        if self.kind == "sdgen":
            self._numpy = np.random.Generator(np.random.PCG64(seed))
        elif self.kind == "torch-cpu":
            self._torch = TorchCpuGenerator(seed)
        else:
            self._torch = TorchCudaGenerator(seed)

    def draw(self, height: int, width: int) -> np.ndarray:
        shape = (height // 8, width // 8, 4)
        if self.kind == "sdgen":
            return self._numpy.standard_normal(shape, dtype=np.float32)
        # torch draws the (channels, height, width) tensor; sdgen's latents are channels-last
        return np.ascontiguousarray(self._torch.randn((4, *shape[:2])).transpose(1, 2, 0))


def check_rng(kind) -> str:
    """``kind`` as an ``RNG_KINDS`` name (the ``RNG_ALIASES`` are taken too: A1111's
    ``CPU``, ``GPU`` and ``NV``, stable-diffusion.cpp's ``cuda``); ``ConfigError``
    naming the choices otherwise."""
    if isinstance(kind, str):
        wanted = kind.strip().lower()
        if wanted in RNG_KINDS:
            return wanted
        if wanted in RNG_ALIASES:
            return RNG_ALIASES[wanted]
    raise ConfigError(f"rng must be one of {', '.join(RNG_KINDS)}, got {kind!r}")


__all__ = [
    "A1111_RNG_LABELS",
    "DEFAULT_RNG",
    "RNG_ALIASES",
    "RNG_KINDS",
    "LatentNoise",
    "check_rng",
]
