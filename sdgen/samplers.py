"""Samplers: the timestep table and the update rule, as pure NumPy maths.

A sampler knows nothing about Keras models, files or the CLI (diffusers keeps its
``scheduling_*.py`` apart from its models the same way). The pipeline asks it for the
timesteps to visit, calls the U-Net at each one, and hands the noise prediction to
:meth:`Sampler.step`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from .errors import ConfigError

TRAINING_STEPS = 1000


@cache
def sd_alphas_cumprod() -> np.ndarray:
    """The SD 1.x/2.x training schedule: "scaled_linear" betas from 0.00085 to 0.012 over
    1000 steps (the LDM configs); returns the cumulative products of the alphas."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, TRAINING_STEPS, dtype=np.float64) ** 2
    return np.cumprod(1.0 - betas)


@dataclass(frozen=True)
class DDIMSampler:
    """Deterministic DDIM (Song et al. 2020, eq. 12 with eta = 0).

    The timestep table is keras_cv's: ``steps`` points spread evenly over [0, 999] and
    rounded (a single step visits t = 0), so sdgen reproduces keras_cv's
    ``StableDiffusion.text_to_image`` given the same noise.
    """

    name: str = "ddim"
    label: str = "DDIM"

    def timesteps(self, steps: int) -> np.ndarray:
        """The timesteps to visit, in the order they are visited (descending)."""
        if steps < 1:
            raise ConfigError(f"steps must be at least 1, got {steps}")
        ratio = (TRAINING_STEPS - 1) / (steps - 1) if steps > 1 else TRAINING_STEPS
        return (np.arange(steps) * ratio).round().astype(np.int64)[::-1].copy()

    def step(
        self, noise_prediction: np.ndarray, index: int, timesteps: np.ndarray, sample: np.ndarray
    ) -> np.ndarray:
        """One DDIM update from ``timesteps[index]`` to the next timestep in the table.

        x_prev = sqrt(a_prev) * x0 + sqrt(1 - a_prev) * eps, with
        x0 = (x_t - sqrt(1 - a_t) * eps) / sqrt(a_t); a_prev is 1 after the last step.
        """
        alphas = sd_alphas_cumprod()
        alpha = alphas[timesteps[index]]
        alpha_prev = alphas[timesteps[index + 1]] if index + 1 < len(timesteps) else 1.0
        eps = noise_prediction.astype(np.float64)
        predicted_x0 = (sample - np.sqrt(1.0 - alpha) * eps) / np.sqrt(alpha)
        updated = np.sqrt(alpha_prev) * predicted_x0 + np.sqrt(1.0 - alpha_prev) * eps
        return updated.astype(np.float32)


SAMPLERS = {"ddim": DDIMSampler}


def get_sampler(name: str):
    """A sampler by its CLI name; raises ``ConfigError`` listing the valid names."""
    if name not in SAMPLERS:
        raise ConfigError(f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]()
