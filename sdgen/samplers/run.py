"""The run protocol every sampler returns from ``start()``, and the checks on its inputs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from .schedule import TRAINING_STEPS

PREDICTION_TYPES = ("epsilon", "v_prediction")


def check_start(steps: int, prediction_type: str) -> None:
    """Raise ``ConfigError`` unless ``steps`` is in [1, 1000] and the prediction type is
    known."""
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
