"""Samplers started part-way (img2img, inpainting, hires fix), without diffusers.

``start_index=0`` is exactly the whole run of before; a run started at ``start_index``
is the tail of the whole run, bit for bit, with DPM++ 2M's history starting fresh; and a
strength or start index that runs no step is a ``ConfigError``. The maths against
diffusers' schedulers is in ``tests/reference/test_samplers_vs_diffusers.py``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from sdgen.errors import ConfigError
from sdgen.samplers import (
    PREDICTION_TYPES,
    SAMPLERS,
    DDIMSampler,
    sd_alphas_cumprod,
    start_index_for_strength,
)

ALL = {**SAMPLERS, "ddim-leading": DDIMSampler(spacing="leading")}
SHAPE = (2, 4, 4, 4)


def stand_in_model(x, t):
    """A smooth, nonlinear stand-in for the U-Net."""
    return (0.8 * x * np.cos(t / 400.0) + 0.3 * np.sin(3.0 * x + t / 250.0)).astype(np.float32)


def same(a, b) -> bool:
    """Equal bit for bit, in the same dtype and shape (or both None)."""
    if a is None or b is None:
        return a is b
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def walk(run, start, noises, first=0):
    """Every model input and latent of ``run`` from step ``first`` on, from ``start``."""
    x, seen = start, []
    for index in range(first, len(run.timesteps)):
        model_input = run.scale_model_input(x, index)
        output = stand_in_model(model_input, run.timesteps[index])
        x = run.step(output, index, x, noises[index] if run.needs_noise else None)
        seen += [model_input, x]
    return seen


def draws(seed, count):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(SHAPE).astype(np.float32) for _ in range(count)]


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
@pytest.mark.parametrize("steps", [1, 2, 10])
@pytest.mark.parametrize("name", list(ALL))
def test_start_index_zero_is_the_whole_run(name, steps, prediction_type):
    sampler = ALL[name]
    whole = sampler.start(steps, prediction_type)
    runs = [
        sampler.start(steps, prediction_type, 0),
        sampler.start(steps, prediction_type, start_index=start_index_for_strength(steps, 1.0)),
    ]
    assert len(whole.timesteps) == steps
    for run in runs:
        for field in dataclasses.fields(whole):
            ours, theirs = getattr(run, field.name), getattr(whole, field.name)
            assert same(ours, theirs), field.name
    start, *noises = draws(steps, steps + 1)
    expected = walk(whole, start * np.float32(whole.init_noise_sigma), noises)
    for run in runs:
        seen = walk(run, start * np.float32(run.init_noise_sigma), noises)
        assert all(same(a, b) for a, b in zip(seen, expected, strict=True))


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
@pytest.mark.parametrize("name", list(ALL))
def test_a_later_start_is_the_tail_of_the_whole_run(name, prediction_type):
    sampler, steps = ALL[name], 10
    x0, start, *noises = draws(1, steps + 2)
    for start_index in (1, 4, 9):
        part = sampler.start(steps, prediction_type, start_index)
        whole = sampler.start(steps, prediction_type)
        assert same(part.timesteps, whole.timesteps[start_index:])
        assert part.init_noise_sigma == whole.init_noise_sigma
        assert part.needs_noise == whole.needs_noise
        for index in range(len(part.timesteps)):
            later = whole.add_noise(x0, start, start_index + index)
            assert same(part.add_noise(x0, start, index), later)
        # a fresh whole run stepped from the start index on gives the same latents bit for
        # bit: DPM++ 2M's first step there is first order too, as its history is empty
        seen = walk(part, part.add_noise(x0, start), noises[start_index:])
        expected = walk(whole, whole.add_noise(x0, start, start_index), noises, start_index)
        assert all(same(a, b) for a, b in zip(seen, expected, strict=True))


@pytest.mark.parametrize("name", ["dpmpp-2m", "dpmpp-2m-karras"])
def test_dpmpp_2m_history_starts_fresh_at_the_start_index(name):
    """Non-vacuous: a whole run that has stepped up to the start index, and so has a
    history, takes another (second-order) step there than the run started there."""
    x0, start = draws(2, 2)
    whole = ALL[name].start(10)
    x = start
    for index in range(5):
        x = whole.step(stand_in_model(x, whole.timesteps[index]), index, x)
    part = ALL[name].start(10, start_index=5)
    latents = part.add_noise(x0, start)
    output = stand_in_model(latents, part.timesteps[0])
    assert np.abs(part.step(output, 0, latents) - whole.step(output, 5, latents)).max() > 1e-4


@pytest.mark.parametrize("name", ["ddim", "ddim-leading", "dpmpp-2m"])
def test_add_noise_is_the_forward_process(name):
    """sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) noise at the run's integer timestep."""
    alpha_bar = sd_alphas_cumprod()
    ones, zeros = np.ones(SHAPE, np.float32), np.zeros(SHAPE, np.float32)
    for start_index in (0, 3, 9):
        run = ALL[name].start(10, start_index=start_index)
        a = alpha_bar[int(run.timesteps[0])]
        np.testing.assert_allclose(run.add_noise(ones, zeros), math.sqrt(a), rtol=1e-6)
        np.testing.assert_allclose(run.add_noise(zeros, ones), math.sqrt(1 - a), rtol=1e-6)


@pytest.mark.parametrize("name", ["euler", "euler-a"])
def test_add_noise_from_the_top_is_txt2img_noise(name):
    """For k-diffusion samplers, x0 + sigma * noise: from index 0 and x0 = 0 it is the
    pure-noise start of txt2img."""
    (noise,) = draws(3, 1)
    run = ALL[name].start(20)
    expected = noise * np.float32(run.init_noise_sigma)
    np.testing.assert_allclose(run.add_noise(np.zeros_like(noise), noise), expected, rtol=1e-6)
    later = ALL[name].start(20, start_index=12)
    assert np.abs(later.add_noise(np.zeros_like(noise), noise)).max() < np.abs(expected).max()


@pytest.mark.parametrize(
    ("steps", "strength", "start_index"),
    [(10, 1.0, 0), (10, 1, 0), (10, 0.75, 3), (10, 0.3, 7), (10, 0.1, 9), (50, 0.02, 49),
     (7, 0.5, 4), (20, np.float32(0.5), 10), (1, 1.0, 0)],
)  # fmt: skip
def test_start_index_for_strength_follows_diffusers(steps, strength, start_index):
    """diffusers' img2img rule: steps - min(int(steps * strength), steps)."""
    assert start_index_for_strength(steps, strength) == start_index
    run = SAMPLERS["euler"].start(steps, start_index=start_index)
    assert len(run.timesteps) == steps - start_index >= 1


@pytest.mark.parametrize("strength", [0, 0.0, -0.5, 1.01, 2, math.nan, math.inf, True, "0.5", None])
def test_a_strength_outside_zero_to_one_is_a_config_error(strength):
    with pytest.raises(ConfigError, match="strength"):
        start_index_for_strength(10, strength)


@pytest.mark.parametrize(("steps", "strength"), [(10, 0.05), (50, 0.019), (1, 0.5)])
def test_a_strength_that_runs_no_step_is_a_config_error(steps, strength):
    with pytest.raises(ConfigError, match="runs no step"):
        start_index_for_strength(steps, strength)


def test_start_index_for_strength_checks_the_steps():
    for steps in (0, 1001, 2.0, True):
        with pytest.raises(ConfigError, match="steps"):
            start_index_for_strength(steps, 0.5)


@pytest.mark.parametrize("start_index", [-1, 10, 11, 1.5, True, "1", None])
@pytest.mark.parametrize("name", list(ALL))
def test_a_start_index_outside_the_run_is_a_config_error(name, start_index):
    with pytest.raises(ConfigError, match="start index"):
        ALL[name].start(10, "epsilon", start_index)
