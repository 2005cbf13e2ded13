"""Each sampler's maths against the diffusers scheduler of the same name.

Both sides start from the same latents and are driven by the same stand-in model
function (a smooth, nonlinear function of the latents and the timestep, standing in for
the U-Net), over whole trajectories of 1, 2, 10 and 50 steps, for epsilon and v
prediction. Every intermediate latent must agree within 1e-4. Euler a is fed the same
noise sequence on both sides.
"""

from __future__ import annotations

import numpy as np
import pytest

from sdgen.samplers import (
    DDIMSampler,
    DPMSolverPlusPlus2MSampler,
    EulerAncestralSampler,
    EulerSampler,
)

from .conftest import require

torch = require("torch")
diffusers = require("diffusers")

SD_SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
}
STEPS = [1, 2, 10, 50]
PREDICTIONS = ["epsilon", "v_prediction"]
SHAPE = (2, 8, 8, 4)


def stand_in_model(x, t, lib):
    """A deterministic stand-in for the U-Net: smooth in x and t, not linear in either."""
    return 0.8 * x * lib.cos(t / 400.0) + 0.3 * lib.sin(3.0 * x + t / 250.0)


def reference_scheduler(name: str, prediction_type: str):
    schedulers = diffusers.schedulers
    if name == "ddim":
        return schedulers.DDIMScheduler(
            **SD_SCHEDULE,
            prediction_type=prediction_type,
            clip_sample=False,
            set_alpha_to_one=False,
            steps_offset=1,
            timestep_spacing="leading",
        )
    if name == "euler":
        return schedulers.EulerDiscreteScheduler(**SD_SCHEDULE, prediction_type=prediction_type)
    if name == "euler-a":
        return schedulers.EulerAncestralDiscreteScheduler(
            **SD_SCHEDULE, prediction_type=prediction_type
        )
    return schedulers.DPMSolverMultistepScheduler(
        **SD_SCHEDULE,
        prediction_type=prediction_type,
        algorithm_type="dpmsolver++",
        solver_order=2,
        use_karras_sigmas=name == "dpmpp-2m-karras",
    )


OURS = {
    "ddim": DDIMSampler(spacing="leading"),
    "euler": EulerSampler(),
    "euler-a": EulerAncestralSampler(),
    "dpmpp-2m": DPMSolverPlusPlus2MSampler(),
    "dpmpp-2m-karras": DPMSolverPlusPlus2MSampler(karras=True),
}


def run_reference(name, prediction_type, steps, start, noises, monkeypatch):
    scheduler = reference_scheduler(name, prediction_type)
    scheduler.set_timesteps(steps)
    if name == "euler-a":
        queue = [torch.from_numpy(n) for n in noises]
        module = diffusers.schedulers.scheduling_euler_ancestral_discrete
        monkeypatch.setattr(module, "randn_tensor", lambda *a, **k: queue.pop(0))
    x = torch.from_numpy(start) * scheduler.init_noise_sigma
    trajectory = []
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(x, t)
        output = stand_in_model(model_input, t.to(torch.float32), torch)
        x = scheduler.step(output, t, x).prev_sample
        trajectory.append(x.numpy().astype(np.float64))
    return (
        scheduler.timesteps.numpy().astype(np.float64),
        float(scheduler.init_noise_sigma),
        trajectory,
    )


def run_ours(name, prediction_type, steps, start, noises):
    run = OURS[name].start(steps, prediction_type)
    x = start * np.float32(run.init_noise_sigma)
    trajectory = []
    for index, t in enumerate(run.timesteps):
        model_input = run.scale_model_input(x, index)
        output = stand_in_model(model_input.astype(np.float64), np.float64(t), np)
        x = run.step(output, index, x, noises[index] if run.needs_noise else None)
        trajectory.append(np.asarray(x, np.float64))
    return run.timesteps, run.init_noise_sigma, trajectory


@pytest.mark.parametrize("prediction_type", PREDICTIONS)
@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("name", list(OURS))
def test_trajectory_matches_diffusers(name, steps, prediction_type, monkeypatch):
    rng = np.random.default_rng(steps)
    start = rng.standard_normal(SHAPE).astype(np.float32)
    noises = [rng.standard_normal(SHAPE).astype(np.float32) for _ in range(steps)]
    ref_t, ref_sigma, ref_path = run_reference(
        name, prediction_type, steps, start, noises, monkeypatch
    )
    t, sigma, path = run_ours(name, prediction_type, steps, start, noises)
    np.testing.assert_allclose(t, ref_t, atol=1e-3)
    assert sigma == pytest.approx(ref_sigma, rel=1e-4)  # diffusers keeps alpha_bar in float32
    assert len(path) == len(ref_path) == steps
    for step, (ours, reference) in enumerate(zip(path, ref_path, strict=True)):
        scale = max(1.0, float(np.abs(reference).max()))
        error = float(np.abs(ours - reference).max()) / scale
        assert error < 1e-4, f"step {step}: max abs difference {error:.2e}"
    assert np.isfinite(path[-1]).all()


def test_the_stand_in_model_makes_samplers_disagree():
    """Guard against a vacuous comparison: different samplers give different results."""
    start = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    noises = [np.zeros(SHAPE, np.float32)] * 10
    finals = [run_ours(name, "epsilon", 10, start, noises)[2][-1] for name in OURS]
    for i in range(len(finals)):
        for j in range(i + 1, len(finals)):
            assert np.abs(finals[i] - finals[j]).max() > 1e-3
