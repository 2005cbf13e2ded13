"""Euler and Euler ancestral (Karras et al. 2022), in k-diffusion form."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .run import SamplerRun, check_start
from .schedule import linspace_timesteps, timestep_sigmas


@dataclass
class _SigmaRun(SamplerRun):
    """Samplers in k-diffusion form: x = x0 + sigma * eps, the U-Net sees
    x / sqrt(sigma^2 + 1)."""

    sigmas: np.ndarray = field(default=None, repr=False)

    def scale_model_input(self, sample, index):
        return (sample / np.sqrt(self.sigmas[index] ** 2 + 1.0)).astype(np.float32)

    def denoised(self, model_output, index, sample):
        sigma = self.sigmas[index]
        output = np.asarray(model_output, np.float64)
        sample = np.asarray(sample, np.float64)
        if self.prediction_type == "epsilon":
            return sample - sigma * output
        return output * (-sigma / np.sqrt(sigma**2 + 1.0)) + sample / (sigma**2 + 1.0)

    def add_noise(self, x0, noise, index=0):
        """x0 + sigma * noise, with sigma the noise level at step ``index``."""
        sigma = self.sigmas[index]
        x0 = np.asarray(x0, np.float64)
        return (x0 + sigma * np.asarray(noise, np.float64)).astype(np.float32)


@dataclass
class _EulerRun(_SigmaRun):
    def step(self, model_output, index, sample, noise=None):
        """Karras et al. (2022) Algorithm 1 without churn: x += d * (sigma_next - sigma),
        with d = (x - x0) / sigma."""
        sigma, sigma_next = self.sigmas[index], self.sigmas[index + 1]
        sample = np.asarray(sample, np.float64)
        derivative = (sample - self.denoised(model_output, index, sample)) / sigma
        return (sample + derivative * (sigma_next - sigma)).astype(np.float32)


@dataclass
class _EulerAncestralRun(_SigmaRun):
    def step(self, model_output, index, sample, noise=None):
        """An Euler step down to sigma_down, then fresh noise of sigma_up, where
        sigma_up^2 + sigma_down^2 = sigma_next^2 (k-diffusion's ``get_ancestral_step``)."""
        if noise is None:
            raise ValueError("Euler a draws fresh noise at every step; pass noise")
        sigma, sigma_next = self.sigmas[index], self.sigmas[index + 1]
        sigma_up = np.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2)
        sigma_down = np.sqrt(sigma_next**2 - sigma_up**2)
        sample = np.asarray(sample, np.float64)
        derivative = (sample - self.denoised(model_output, index, sample)) / sigma
        updated = sample + derivative * (sigma_down - sigma) + np.asarray(noise) * sigma_up
        return updated.astype(np.float32)


def _start(run_class, steps, prediction_type, start_index, needs_noise):
    """A run over fractional timesteps evenly over [999, 0] and their interpolated
    sigmas, then 0, from ``start_index`` on."""
    check_start(steps, prediction_type, start_index)
    timesteps = linspace_timesteps(steps)
    sigmas = np.append(timestep_sigmas(timesteps), 0.0)
    # pure-noise latents are scaled to the schedule's largest level, whatever the start
    init_noise_sigma = float(sigmas.max())
    return run_class(
        timesteps[start_index:],
        init_noise_sigma,
        needs_noise,
        prediction_type,
        sigmas[start_index:],
    )


@dataclass(frozen=True)
class EulerSampler:
    """Euler (Karras et al. 2022), as diffusers' ``EulerDiscreteScheduler`` and
    AUTOMATIC1111's "Euler"."""

    name: str = "euler"
    label: str = "Euler"

    def start(
        self, steps: int, prediction_type: str = "epsilon", start_index: int = 0
    ) -> SamplerRun:
        return _start(_EulerRun, steps, prediction_type, start_index, needs_noise=False)


@dataclass(frozen=True)
class EulerAncestralSampler:
    """Euler ancestral, as diffusers' ``EulerAncestralDiscreteScheduler`` and
    AUTOMATIC1111's "Euler a". Adds fresh noise at every step."""

    name: str = "euler-a"
    label: str = "Euler a"

    def start(
        self, steps: int, prediction_type: str = "epsilon", start_index: int = 0
    ) -> SamplerRun:
        return _start(_EulerAncestralRun, steps, prediction_type, start_index, needs_noise=True)
