"""Samplers: timestep tables and update rules, as pure NumPy maths.

A sampler knows nothing about Keras models, files or the CLI (diffusers keeps its
``scheduling_*.py`` apart from its models the same way). For one generation the pipeline
asks a sampler to ``start()`` a run, then at each step ``i``:

1. scales the latents with ``run.scale_model_input(x, i)`` and calls the U-Net at
   ``run.timesteps[i]``;
2. hands the U-Net's output to ``run.step(output, i, x, noise)``, which returns the
   latents for the next step. Ancestral samplers (``run.needs_noise``) take one standard
   normal draw per step, which the pipeline makes from each image's own generator.

All samplers use the SD 1.x/2.x training schedule and accept epsilon or v prediction.
Notation follows the papers: ``alpha_bar`` (cumulative alphas, DDPM), ``sigma`` (the
k-diffusion noise level sqrt((1 - alpha_bar) / alpha_bar), Karras et al. 2022), and for
DPM-Solver++ (Lu et al. 2022) ``alpha_t = 1 / sqrt(1 + sigma^2)``, ``sigma_t = sigma *
alpha_t`` and ``lambda_t = log(alpha_t / sigma_t)``.

A run can also start part-way (img2img, inpainting, hires fix): ``start(steps,
prediction_type, start_index)``, with ``start_index_for_strength(steps, strength)``
giving diffusers' index for an img2img strength, and ``run.add_noise(x0, noise)`` the
starting latents; ``SamplerRun`` says how the pipeline uses them.

Modules:

- :mod:`~sdgen.samplers.schedule`: the SD training schedule (alpha_bar, sigmas), the
  timestep spacings (linspace, leading), Karras noise levels and the sigma -> timestep
  mapping.
- :mod:`~sdgen.samplers.run`: ``SamplerRun``, the protocol a ``start()`` returns, the
  checks on ``start()``'s arguments and ``start_index_for_strength``.
- :mod:`~sdgen.samplers.ddim`: DDIM.
- :mod:`~sdgen.samplers.euler`: Euler and Euler ancestral (k-diffusion form).
- :mod:`~sdgen.samplers.dpmpp`: DPM-Solver++ 2M, plain and Karras.
- this module: the registry, ``SAMPLERS`` and ``get_sampler``.
"""

from __future__ import annotations

from ..errors import ConfigError
from .ddim import DDIMSampler
from .dpmpp import DPMSolverPlusPlus2MSampler
from .euler import EulerAncestralSampler, EulerSampler
from .run import PREDICTION_TYPES, SamplerRun, start_index_for_strength
from .schedule import (
    TRAINING_STEPS,
    karras_sigmas,
    sd_alphas_cumprod,
    sd_sigmas,
    sigma_to_timestep,
)

__all__ = [
    "PREDICTION_TYPES",
    "SAMPLERS",
    "TRAINING_STEPS",
    "DDIMSampler",
    "DPMSolverPlusPlus2MSampler",
    "EulerAncestralSampler",
    "EulerSampler",
    "SamplerRun",
    "get_sampler",
    "karras_sigmas",
    "sd_alphas_cumprod",
    "sd_sigmas",
    "sigma_to_timestep",
    "start_index_for_strength",
]

SAMPLERS = {
    "ddim": DDIMSampler(),
    "euler": EulerSampler(),
    "euler-a": EulerAncestralSampler(),
    "dpmpp-2m": DPMSolverPlusPlus2MSampler(),
    "dpmpp-2m-karras": DPMSolverPlusPlus2MSampler(karras=True),
}


def get_sampler(name):
    """A sampler by its CLI name (or AUTOMATIC1111 label); a sampler object is returned as
    it is. Raises ``ConfigError`` listing the valid names."""
    if not isinstance(name, str):
        return name
    if name in SAMPLERS:
        return SAMPLERS[name]
    for sampler in SAMPLERS.values():
        if sampler.label == name:
            return sampler
    raise ConfigError(f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}")
