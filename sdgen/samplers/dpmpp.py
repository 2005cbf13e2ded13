"""DPM-Solver++ 2M (Lu et al. 2022), with linspace or Karras noise levels.

In DPM-Solver++'s notation ``alpha_t = 1 / sqrt(1 + sigma^2)``, ``sigma_t = sigma *
alpha_t`` and ``lambda_t = log(alpha_t / sigma_t)``, where ``sigma`` is the k-diffusion
noise level; the latents are in variance-preserving form, x = alpha_t x0 + sigma_t eps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .run import SamplerRun, check_start
from .schedule import karras_sigmas, linspace_timesteps, sigma_to_timestep, timestep_sigmas


@dataclass
class _DPMSolverRun(SamplerRun):
    sigmas: np.ndarray = field(default=None, repr=False)
    previous_x0: np.ndarray | None = field(default=None, repr=False)

    def step(self, model_output, index, sample, noise=None):
        """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): first order at the run's first
        step (also when it starts part-way: the history starts fresh, as in diffusers),
        second order (midpoint) after, and the last step, to sigma = 0, returns x0."""
        sigma, sigma_next = self.sigmas[index], self.sigmas[index + 1]
        alpha_s, sigma_s = _vp(sigma)
        output = np.asarray(model_output, np.float64)
        sample = np.asarray(sample, np.float64)
        if self.prediction_type == "epsilon":
            x0 = (sample - sigma_s * output) / alpha_s
        else:
            x0 = alpha_s * sample - sigma_s * output
        previous, self.previous_x0 = self.previous_x0, x0
        if sigma_next == 0:
            return x0.astype(np.float32)
        alpha_t, sigma_t = _vp(sigma_next)
        h = _lambda(alpha_t, sigma_t) - _lambda(alpha_s, sigma_s)
        if previous is None or index == 0:
            correction = x0
        else:
            alpha_p, sigma_p = _vp(self.sigmas[index - 1])
            h_last = _lambda(alpha_s, sigma_s) - _lambda(alpha_p, sigma_p)
            ratio = h_last / h
            correction = x0 + 0.5 * (x0 - previous) / ratio
        updated = (sigma_t / sigma_s) * sample - alpha_t * np.expm1(-h) * correction
        return updated.astype(np.float32)

    def add_noise(self, x0, noise, index=0):
        """alpha_t * x0 + sigma_t * noise at the noise level of step ``index``: the same
        latents as DDPM's forward process, in the variance-preserving form this solver
        works in."""
        alpha_t, sigma_t = _vp(self.sigmas[index])
        x0 = np.asarray(x0, np.float64)
        return (alpha_t * x0 + sigma_t * np.asarray(noise, np.float64)).astype(np.float32)


def _vp(sigma: float) -> tuple[float, float]:
    alpha_t = 1.0 / np.sqrt(sigma**2 + 1.0)
    return alpha_t, sigma * alpha_t


def _lambda(alpha_t: float, sigma_t: float) -> float:
    return np.log(alpha_t) - np.log(sigma_t)


@dataclass(frozen=True)
class DPMSolverPlusPlus2MSampler:
    """DPM-Solver++ 2M, as diffusers' ``DPMSolverMultistepScheduler`` (order 2,
    ``dpmsolver++``, final sigma 0) and AUTOMATIC1111's "DPM++ 2M"; with ``karras`` the
    noise levels follow Karras et al. (2022), as "DPM++ 2M Karras". Close to converged at
    20-25 steps."""

    karras: bool = False

    @property
    def name(self) -> str:
        return "dpmpp-2m-karras" if self.karras else "dpmpp-2m"

    @property
    def label(self) -> str:
        return "DPM++ 2M Karras" if self.karras else "DPM++ 2M"

    def start(
        self, steps: int, prediction_type: str = "epsilon", start_index: int = 0
    ) -> SamplerRun:
        check_start(steps, prediction_type, start_index)
        if self.karras:
            sigmas = karras_sigmas(steps)
            timesteps = sigma_to_timestep(sigmas).round()
        else:
            # steps + 1 points over [999, 0], without the last (t = 0): diffusers' table
            timesteps = linspace_timesteps(steps + 1).round()[:-1]
            sigmas = timestep_sigmas(timesteps)
        sigmas = np.append(sigmas, 0.0)
        return _DPMSolverRun(
            timesteps[start_index:], 1.0, False, prediction_type, sigmas[start_index:]
        )
