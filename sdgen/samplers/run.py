"""The run protocol every sampler's ``start()`` returns, and the checks on its inputs.

A run can start part-way down the schedule, as img2img, inpainting and hires fix do: the
``strength`` of an img2img request becomes a ``start_index`` with
:func:`start_index_for_strength`, and ``sampler.start(steps, prediction_type,
start_index)`` returns a run over the remaining steps only.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from .schedule import TRAINING_STEPS

PREDICTION_TYPES = ("epsilon", "v_prediction")


def _is_int(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | np.integer)


def check_steps(steps: int) -> None:
    """Raise ``ConfigError`` unless ``steps`` is an integer in [1, 1000]."""
    if not _is_int(steps) or steps < 1:
        raise ConfigError(f"steps must be at least 1, got {steps}")
    if steps > TRAINING_STEPS:
        raise ConfigError(
            f"steps must be at most {TRAINING_STEPS}, the noise levels the model was "
            f"trained on; got {steps}"
        )


def check_start(steps: int, prediction_type: str, start_index: int = 0) -> None:
    """Raise ``ConfigError`` unless ``steps`` is in [1, 1000], the prediction type is
    known and ``start_index`` is an integer in [0, steps - 1]: at least one step runs."""
    check_steps(steps)
    if prediction_type not in PREDICTION_TYPES:
        raise ConfigError(
            f"unknown prediction type {prediction_type!r}; use {' or '.join(PREDICTION_TYPES)}"
        )
    if not _is_int(start_index) or not 0 <= start_index < steps:
        raise ConfigError(
            f"start index must be an integer from 0 to {steps - 1} (steps - 1) so that at "
            f"least one of the {steps} steps runs; got {start_index!r}"
        )


def check_strength(strength, name: str = "strength") -> None:
    """``ConfigError`` unless ``strength`` is a real number in (0, 1]."""
    if (
        isinstance(strength, bool)
        or not isinstance(strength, numbers.Real)
        or not math.isfinite(strength)
        or not 0.0 < strength <= 1.0
    ):
        raise ConfigError(f"{name} must be a number in (0, 1], got {strength!r}")


def start_index_for_strength(steps: int, strength: float) -> int:
    """The ``start_index`` of an img2img run of ``steps`` steps at ``strength`` in (0, 1].

    Strength is the fraction of the schedule that is run: 1.0 starts from pure noise
    (index 0, the whole run), 0.3 runs the last ``int(0.3 * steps)`` steps. The rounding
    is diffusers' (``StableDiffusionImg2ImgPipeline.get_timesteps``): ``init =
    min(int(steps * strength), steps)``, ``start_index = steps - init``. Raises
    ``ConfigError`` for a strength outside (0, 1], or one so small that no step would run
    (below 1 / steps).
    """
    check_steps(steps)
    check_strength(strength)
    init = min(int(steps * float(strength)), steps)
    if init == 0:
        raise ConfigError(
            f"strength {strength} of {steps} steps runs no step; use a strength of at "
            f"least 1/{steps} or more steps"
        )
    return max(steps - init, 0)


@dataclass
class SamplerRun:
    """The state of one sampling run; made by ``Sampler.start(steps, prediction_type,
    start_index=0)``.

    timesteps: what the U-Net is given at each step (float, descending); for a run
        started at ``start_index`` only the remaining ``steps - start_index`` of them.
    init_noise_sigma: the standard deviation of pure-noise starting latents (txt2img),
        that of the whole schedule whatever the start index.
    needs_noise: whether ``step`` takes a fresh standard normal draw.

    The indices ``scale_model_input``, ``step`` and ``add_noise`` take count from the
    run's own first step: 0 is ``timesteps[0]`` also in a run started part-way.

    How the pipeline starts the latents:

    - txt2img: ``latents = noise * init_noise_sigma``, with ``start_index=0``.
    - img2img and hires fix: ``run = sampler.start(steps, prediction_type,
      start_index_for_strength(steps, strength))``, then ``latents = run.add_noise(x0,
      noise)``, where ``x0`` is the encoded image's latents (already scaled by the VAE
      factor) and ``noise`` a standard normal draw of the same shape. Not multiplied by
      ``init_noise_sigma``: ``add_noise`` gives the latents at the first remaining
      step's noise level itself.
    - inpainting with a 4-channel U-Net: as img2img, and after step ``i`` the known
      region is put back as ``run.add_noise(x0, noise, i + 1)`` (the next step's level)
      while ``i + 1 < len(timesteps)``, and as ``x0`` after the last step.

    The denoising loop is then the same for all of them.
    """

    timesteps: np.ndarray
    init_noise_sigma: float
    needs_noise: bool
    prediction_type: str

    def scale_model_input(self, sample: np.ndarray, index: int) -> np.ndarray:
        """The latents as the U-Net takes them at step ``index``."""
        return sample

    def step(
        self,
        model_output: np.ndarray,
        index: int,
        sample: np.ndarray,
        noise: np.ndarray | None = None,
    ) -> np.ndarray:
        """The latents after step ``index``, from the U-Net's output at that step."""
        raise NotImplementedError

    def add_noise(self, x0: np.ndarray, noise: np.ndarray, index: int = 0) -> np.ndarray:
        """Clean latents ``x0`` noised with the standard normal ``noise`` to the noise
        level of step ``index`` (float32): the latents to start a run from."""
        raise NotImplementedError
