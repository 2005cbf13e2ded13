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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

import numpy as np

from .errors import ConfigError

TRAINING_STEPS = 1000
PREDICTION_TYPES = ("epsilon", "v_prediction")


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


def _check(steps: int, prediction_type: str) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 1:
        raise ConfigError(f"steps must be at least 1, got {steps}")
    if steps > TRAINING_STEPS:
        raise ConfigError(
            f"steps must be at most {TRAINING_STEPS}, the noise levels the model was "
            f"trained on; got {steps}"
        )
    if prediction_type not in PREDICTION_TYPES:
        raise ConfigError(
            f"unknown prediction type {prediction_type!r}; use {' or '.join(PREDICTION_TYPES)}"
        )


@dataclass
class SamplerRun:
    """The state of one sampling run; made by ``Sampler.start()``.

    timesteps: what the U-Net is given at each step (float, descending).
    init_noise_sigma: the standard deviation of the starting latents.
    needs_noise: whether ``step`` takes a fresh standard normal draw.
    """

    timesteps: np.ndarray
    init_noise_sigma: float
    needs_noise: bool
    prediction_type: str

    def scale_model_input(self, sample: np.ndarray, index: int) -> np.ndarray:
        return sample

    def step(
        self,
        model_output: np.ndarray,
        index: int,
        sample: np.ndarray,
        noise: np.ndarray | None = None,
    ) -> np.ndarray:
        raise NotImplementedError


# -- DDIM ---------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class DDIMSampler:
    """Deterministic DDIM with one of two timestep tables.

    ``spacing="linspace"`` (sdgen's ``ddim``): timesteps spread evenly over [0, 999] and
    rounded, the last step landing on alpha_bar = 1. This is keras_cv's own table, so
    sdgen reproduces keras_cv's ``text_to_image`` given the same noise.

    ``spacing="leading"``: diffusers' ``DDIMScheduler`` with the SD configs
    (``steps_offset=1``, ``set_alpha_to_one=False``): t = k * (1000 // steps) + 1, the
    last step landing on alpha_bar[0]. The update rule is the same for both.
    """

    spacing: str = "linspace"
    name: str = "ddim"
    label: str = "DDIM"

    def start(self, steps: int, prediction_type: str = "epsilon") -> SamplerRun:
        _check(steps, prediction_type)
        alpha_bar = sd_alphas_cumprod()
        if self.spacing == "linspace":
            timesteps = np.linspace(0, TRAINING_STEPS - 1, steps).round()[::-1].copy()
            final = 1.0
        elif self.spacing == "leading":
            timesteps = (np.arange(steps) * (TRAINING_STEPS // steps))[::-1] + 1.0
            final = alpha_bar[0]
        else:
            raise ConfigError(f"unknown DDIM spacing {self.spacing!r}")
        alpha_bars = alpha_bar[timesteps.astype(np.int64)]
        alpha_bars_next = np.append(alpha_bars[1:], final)
        return _DDIMRun(timesteps, 1.0, False, prediction_type, alpha_bars, alpha_bars_next)


# -- Euler and Euler ancestral (k-diffusion) ----------------------------------------------


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


def _linspace_sigmas(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Fractional timesteps evenly over [999, 0] and their interpolated sigmas, then 0."""
    timesteps = np.linspace(0, TRAINING_STEPS - 1, steps)[::-1].copy()
    sigmas = np.interp(timesteps, np.arange(TRAINING_STEPS), sd_sigmas())
    return timesteps, np.append(sigmas, 0.0)


@dataclass(frozen=True)
class EulerSampler:
    """Euler (Karras et al. 2022), as diffusers' ``EulerDiscreteScheduler`` and
    AUTOMATIC1111's "Euler"."""

    name: str = "euler"
    label: str = "Euler"

    def start(self, steps: int, prediction_type: str = "epsilon") -> SamplerRun:
        _check(steps, prediction_type)
        timesteps, sigmas = _linspace_sigmas(steps)
        return _EulerRun(timesteps, float(sigmas.max()), False, prediction_type, sigmas)


@dataclass(frozen=True)
class EulerAncestralSampler:
    """Euler ancestral, as diffusers' ``EulerAncestralDiscreteScheduler`` and
    AUTOMATIC1111's "Euler a". Adds fresh noise at every step."""

    name: str = "euler-a"
    label: str = "Euler a"

    def start(self, steps: int, prediction_type: str = "epsilon") -> SamplerRun:
        _check(steps, prediction_type)
        timesteps, sigmas = _linspace_sigmas(steps)
        return _EulerAncestralRun(timesteps, float(sigmas.max()), True, prediction_type, sigmas)


# -- DPM-Solver++ 2M ----------------------------------------------------------------------


@dataclass
class _DPMSolverRun(SamplerRun):
    sigmas: np.ndarray = field(default=None, repr=False)
    previous_x0: np.ndarray | None = field(default=None, repr=False)

    def step(self, model_output, index, sample, noise=None):
        """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): first order at the first step,
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

    def start(self, steps: int, prediction_type: str = "epsilon") -> SamplerRun:
        _check(steps, prediction_type)
        if self.karras:
            sigmas = karras_sigmas(steps)
            timesteps = sigma_to_timestep(sigmas).round()
        else:
            timesteps = np.linspace(0, TRAINING_STEPS - 1, steps + 1).round()[::-1][:-1].copy()
            sigmas = np.interp(timesteps, np.arange(TRAINING_STEPS), sd_sigmas())
        return _DPMSolverRun(timesteps, 1.0, False, prediction_type, np.append(sigmas, 0.0))


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
