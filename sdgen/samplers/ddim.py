"""DDIM (Song et al. 2020), deterministic (eta = 0), with keras_cv's or diffusers' table."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError
from .run import SamplerRun, check_start
from .schedule import leading_timesteps, linspace_timesteps, sd_alphas_cumprod


@dataclass
class _DDIMRun(SamplerRun):
    alpha_bars: np.ndarray = field(default=None, repr=False)
    alpha_bars_next: np.ndarray = field(default=None, repr=False)

    def step(self, model_output, index, sample, noise=None):
        """Song et al. (2020) eq. 12 with eta = 0:
        x_prev = sqrt(a_prev) * x0 + sqrt(1 - a_prev) * eps."""
        alpha, alpha_prev = self.alpha_bars[index], self.alpha_bars_next[index]
        output = np.asarray(model_output, np.float64)
        sample = np.asarray(sample, np.float64)
        if self.prediction_type == "epsilon":
            eps = output
            x0 = (sample - np.sqrt(1.0 - alpha) * eps) / np.sqrt(alpha)
        else:  # v = sqrt(a) * eps - sqrt(1 - a) * x0 (Salimans & Ho 2022)
            x0 = np.sqrt(alpha) * sample - np.sqrt(1.0 - alpha) * output
            eps = np.sqrt(alpha) * output + np.sqrt(1.0 - alpha) * sample
        return (np.sqrt(alpha_prev) * x0 + np.sqrt(1.0 - alpha_prev) * eps).astype(np.float32)

    def add_noise(self, x0, noise, index=0):
        """The forward process q(x_t | x0) of DDPM (Ho et al. 2020, eq. 4):
        sqrt(a) * x0 + sqrt(1 - a) * noise, with a = alpha_bar at step ``index``."""
        alpha = self.alpha_bars[index]
        x0 = np.asarray(x0, np.float64)
        noise = np.asarray(noise, np.float64)
        return (np.sqrt(alpha) * x0 + np.sqrt(1.0 - alpha) * noise).astype(np.float32)


@dataclass(frozen=True)
class DDIMSampler:
    """Deterministic DDIM with one of two timestep tables.

    ``spacing="linspace"`` (sdgen's ``ddim``): timesteps spread evenly over [0, 999] and
    rounded, the last step landing on alpha_bar = 1. This is keras_cv's own table, so
    sdgen reproduces keras_cv's ``text_to_image`` given the same noise.

    ``spacing="leading"``: diffusers' ``DDIMScheduler`` with the SD configs
    (``steps_offset=1``, ``set_alpha_to_one=False``): t = k * (1000 // steps) + 1, the
    last step landing on alpha_bar[0]. The update rule is the same for both.

    A run started at ``start_index`` takes the table's steps from that index on.
    """

    spacing: str = "linspace"
    name: str = "ddim"
    label: str = "DDIM"

    def start(
        self, steps: int, prediction_type: str = "epsilon", start_index: int = 0
    ) -> SamplerRun:
        check_start(steps, prediction_type, start_index)
        alpha_bar = sd_alphas_cumprod()
        if self.spacing == "linspace":
            timesteps = linspace_timesteps(steps).round()
            final = 1.0
        elif self.spacing == "leading":
            timesteps = leading_timesteps(steps)
            final = alpha_bar[0]
        else:
            raise ConfigError(f"unknown DDIM spacing {self.spacing!r}")
        alpha_bars = alpha_bar[timesteps.astype(np.int64)]
        alpha_bars_next = np.append(alpha_bars[1:], final)
        part = slice(start_index, None)
        return _DDIMRun(
            timesteps[part], 1.0, False, prediction_type, alpha_bars[part], alpha_bars_next[part]
        )
