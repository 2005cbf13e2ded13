"""The SD 1.x/2.x training noise schedule and the noise-level tables built from it.

Every sampler in :mod:`sdgen.samplers` draws its timesteps and noise levels from here:
``alpha_bar`` (cumulative alphas, DDPM) of the 1000 training timesteps, the k-diffusion
noise level ``sigma = sqrt((1 - alpha_bar) / alpha_bar)`` (Karras et al. 2022), the
mapping from a noise level back to a (fractional) timestep, and the spacings of a
sampler's timesteps: linspace and leading (the names of diffusers' ``timestep_spacing``,
after Lin et al. 2023, table 2) and Karras et al.'s spacing of noise levels.

Every table here is for a whole run, descending from the noisiest step; a run started
part-way (``start_index``) uses the tail of it.
"""

from __future__ import annotations

from functools import cache

import numpy as np

TRAINING_STEPS = 1000


@cache
def sd_alphas_cumprod() -> np.ndarray:
    """alpha_bar of the SD 1.x/2.x training schedule: "scaled_linear" betas from 0.00085
    to 0.012 over 1000 steps (the LDM configs)."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, TRAINING_STEPS, dtype=np.float64) ** 2
    return np.cumprod(1.0 - betas)


@cache
def sd_sigmas() -> np.ndarray:
    """The k-diffusion noise level of every training timestep, ascending with t."""
    alpha_bar = sd_alphas_cumprod()
    return np.sqrt((1.0 - alpha_bar) / alpha_bar)


def sigma_to_timestep(sigma: np.ndarray) -> np.ndarray:
    """The (fractional) training timestep of each noise level: linear interpolation in
    log sigma, clamped to [0, 999] (diffusers' ``_sigma_to_t``)."""
    log_sigmas = np.log(sd_sigmas())
    return np.interp(np.log(np.maximum(sigma, 1e-10)), log_sigmas, np.arange(TRAINING_STEPS))


def karras_sigmas(steps: int, rho: float = 7.0) -> np.ndarray:
    """Karras et al. (2022) eq. 5: ``steps`` noise levels from sigma_max down to sigma_min,
    evenly spaced in sigma^(1/rho)."""
    sigmas = sd_sigmas()
    sigma_min, sigma_max = sigmas[0], sigmas[-1]
    ramp = np.linspace(0.0, 1.0, steps)
    max_inv, min_inv = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return (max_inv + ramp * (min_inv - max_inv)) ** rho


def linspace_timesteps(steps: int) -> np.ndarray:
    """``steps`` fractional timesteps evenly over [999, 0], descending ("linspace")."""
    return np.linspace(0, TRAINING_STEPS - 1, steps)[::-1].copy()


def leading_timesteps(steps: int, offset: int = 1) -> np.ndarray:
    """t = k * (1000 // steps) + offset for k = steps - 1 ... 0 ("leading", with the SD
    configs' ``steps_offset=1``)."""
    return (np.arange(steps) * (TRAINING_STEPS // steps))[::-1] + float(offset)


def timestep_sigmas(timesteps: np.ndarray) -> np.ndarray:
    """The noise level at each (fractional) timestep, interpolated linearly in t."""
    return np.interp(timesteps, np.arange(TRAINING_STEPS), sd_sigmas())
