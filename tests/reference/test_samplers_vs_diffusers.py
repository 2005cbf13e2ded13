"""Each sampler's maths against the diffusers scheduler of the same name.

Both sides start from the same latents and are driven by the same stand-in model
function (a smooth, nonlinear function of the latents and the timestep, standing in for
the U-Net), for epsilon and v prediction. Euler a is fed the same noise sequence on both
sides.

- Whole trajectories of 1, 2, 10 and 50 steps from pure noise (txt2img): every
  intermediate latent must agree within 1e-4.
- Runs started part-way, as img2img does (``start_index_for_strength``): the remaining
  timesteps against diffusers' own ``StableDiffusionImg2ImgPipeline.get_timesteps`` on
  the same scheduler, the noised starting latents against ``scheduler.add_noise``, the
  re-noised known region of inpainting after each step against ``add_noise`` as the
  inpainting pipeline calls it, and every denoising step against ``scheduler.step``.

sdgen's own ``ddim`` (keras_cv's linspace table, ending on alpha_bar = 1) has no DDIM
scheduler in diffusers that steps along it: ``DDIMScheduler.step`` always goes back
``1000 // steps`` timesteps. Its table is compared with ``DDIMScheduler``'s linspace
table, and its steps with first-order DPM-Solver++ on that same table, which is DDIM
(Lu et al. 2022, section 4.1: DPM-Solver++1 is DDIM).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from sdgen.samplers import (
    SAMPLERS,
    DDIMSampler,
    DPMSolverPlusPlus2MSampler,
    EulerAncestralSampler,
    EulerSampler,
    start_index_for_strength,
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
# (steps, strength): whole runs, typical img2img strengths, and strengths so small that
# one or two steps are left (10 * 0.1, 50 * 0.02 and 25 * 0.04 each leave one)
IMG2IMG = [
    (1, 1.0),
    (10, 1.0),
    (10, 0.75),
    (10, 0.3),
    (10, 0.1),
    (7, 0.5),
    (50, 0.6),
    (50, 0.02),
    (25, 0.04),
    (20, 0.15),
]

# Tolerances (max abs difference over max(1, max |reference|)) for img2img runs: a few
# float32 roundings, as diffusers keeps its sigmas and alpha_bar in float32. The worst
# seen is 2.5e-6 for the noised latents and 6.7e-6 after a step (DPM++ 2M Karras); an
# off-by-one start index is off by 1e-2 or more.
NOISED = 5e-6
STEPPED = 2e-5

OURS = {
    "ddim": DDIMSampler(),
    "ddim-leading": DDIMSampler(spacing="leading"),
    "euler": EulerSampler(),
    "euler-a": EulerAncestralSampler(),
    "dpmpp-2m": DPMSolverPlusPlus2MSampler(),
    "dpmpp-2m-karras": DPMSolverPlusPlus2MSampler(karras=True),
}


def stand_in_model(x, t, lib):
    """A deterministic stand-in for the U-Net: smooth in x and t, not linear in either."""
    return 0.8 * x * lib.cos(t / 400.0) + 0.3 * lib.sin(3.0 * x + t / 250.0)


def reference_scheduler(name: str, prediction_type: str, steps: int):
    """The diffusers scheduler for ``name``, with its timesteps set for ``steps``."""
    schedulers = diffusers.schedulers
    if name == "ddim":
        table = schedulers.DDIMScheduler(
            **SD_SCHEDULE, set_alpha_to_one=True, steps_offset=0, timestep_spacing="linspace"
        )
        table.set_timesteps(steps)
        scheduler = schedulers.DPMSolverMultistepScheduler(
            **SD_SCHEDULE,
            prediction_type=prediction_type,
            algorithm_type="dpmsolver++",
            solver_order=1,
            final_sigmas_type="zero",
        )
        scheduler.set_timesteps(timesteps=table.timesteps.tolist())
        return scheduler
    if name == "ddim-leading":
        scheduler = schedulers.DDIMScheduler(
            **SD_SCHEDULE,
            prediction_type=prediction_type,
            clip_sample=False,
            set_alpha_to_one=False,
            steps_offset=1,
            timestep_spacing="leading",
        )
    elif name == "euler":
        scheduler = schedulers.EulerDiscreteScheduler(
            **SD_SCHEDULE, prediction_type=prediction_type
        )
    elif name == "euler-a":
        scheduler = schedulers.EulerAncestralDiscreteScheduler(
            **SD_SCHEDULE, prediction_type=prediction_type
        )
    else:
        scheduler = schedulers.DPMSolverMultistepScheduler(
            **SD_SCHEDULE,
            prediction_type=prediction_type,
            algorithm_type="dpmsolver++",
            solver_order=2,
            use_karras_sigmas=name == "dpmpp-2m-karras",
        )
    scheduler.set_timesteps(steps)
    return scheduler


def feed_noise(name, noises, monkeypatch):
    """Make Euler a's per-step draws in diffusers come from ``noises``, in order."""
    if name == "euler-a":
        queue = [torch.from_numpy(n) for n in noises]
        module = diffusers.schedulers.scheduling_euler_ancestral_discrete
        monkeypatch.setattr(module, "randn_tensor", lambda *a, **k: queue.pop(0))


def run_reference(name, prediction_type, steps, start, noises, monkeypatch):
    scheduler = reference_scheduler(name, prediction_type, steps)
    feed_noise(name, noises, monkeypatch)
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


def relative_error(ours, reference) -> float:
    reference = np.asarray(reference, np.float64)
    scale = max(1.0, float(np.abs(reference).max()))
    return float(np.abs(np.asarray(ours, np.float64) - reference).max()) / scale


def test_every_sampler_is_compared():
    """A sampler added to the registry must be added here too."""
    assert all(OURS[name] == sampler for name, sampler in SAMPLERS.items())


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
    if name != "ddim":  # its stand-in is DPM-Solver++, whose latents start at sigma 1
        assert sigma == pytest.approx(ref_sigma, rel=1e-4)  # diffusers: alpha_bar in float32
    assert len(path) == len(ref_path) == steps
    for step, (ours, reference) in enumerate(zip(path, ref_path, strict=True)):
        error = relative_error(ours, reference)
        assert error < 1e-4, f"step {step}: max abs difference {error:.2e}"
    assert np.isfinite(path[-1]).all()


def img2img_reference(name, prediction_type, steps, strength, x0, noises, monkeypatch):
    """diffusers' img2img loop, with the inpainting pipeline's re-noising of the known
    region after each step: (timesteps, starting latents, re-noised x0 per step, latents
    after each step)."""
    scheduler = reference_scheduler(name, prediction_type, steps)
    pipeline = SimpleNamespace(scheduler=scheduler)
    timesteps, remaining = diffusers.StableDiffusionImg2ImgPipeline.get_timesteps(
        pipeline, steps, strength, "cpu"
    )
    assert remaining == len(timesteps)
    feed_noise(name, noises[1:], monkeypatch)
    x0, noise = torch.from_numpy(x0), torch.from_numpy(noises[0])
    x = scheduler.add_noise(x0, noise, timesteps[:1])
    start, renoised, trajectory = x.numpy().copy(), [], []
    for i, t in enumerate(timesteps):
        model_input = scheduler.scale_model_input(x, t)
        output = stand_in_model(model_input, t.to(torch.float32), torch)
        x = scheduler.step(output, t, x).prev_sample
        trajectory.append(x.numpy().astype(np.float64))
        if i < len(timesteps) - 1:
            later = scheduler.add_noise(x0, noise, timesteps[i + 1 : i + 2])
            renoised.append(later.numpy().astype(np.float64))
    return timesteps.numpy().astype(np.float64), start, renoised, trajectory


def img2img_ours(name, prediction_type, steps, strength, x0, noises):
    run = OURS[name].start(steps, prediction_type, start_index_for_strength(steps, strength))
    x = run.add_noise(x0, noises[0])
    start, renoised, trajectory = x.copy(), [], []
    for index, t in enumerate(run.timesteps):
        model_input = run.scale_model_input(x, index)
        output = stand_in_model(model_input.astype(np.float64), np.float64(t), np)
        x = run.step(output, index, x, noises[index + 1] if run.needs_noise else None)
        trajectory.append(np.asarray(x, np.float64))
        if index < len(run.timesteps) - 1:
            renoised.append(np.asarray(run.add_noise(x0, noises[0], index + 1), np.float64))
    return run.timesteps, start, renoised, trajectory


@pytest.mark.parametrize("prediction_type", PREDICTIONS)
@pytest.mark.parametrize(("steps", "strength"), IMG2IMG)
@pytest.mark.parametrize("name", list(OURS))
def test_img2img_start_matches_diffusers(name, steps, strength, prediction_type, monkeypatch):
    rng = np.random.default_rng(int(steps * 1000 * strength))
    x0 = rng.standard_normal(SHAPE).astype(np.float32)
    noises = [rng.standard_normal(SHAPE).astype(np.float32) for _ in range(steps + 1)]
    ref_t, ref_start, ref_renoised, ref_path = img2img_reference(
        name, prediction_type, steps, strength, x0, noises, monkeypatch
    )
    t, start, renoised, path = img2img_ours(name, prediction_type, steps, strength, x0, noises)

    assert len(t) == len(ref_t) >= 1
    np.testing.assert_allclose(t, ref_t, atol=1e-3)
    assert start.dtype == np.float32
    error = relative_error(start, ref_start)
    assert error < NOISED, f"starting latents: max abs difference {error:.2e}"
    assert len(renoised) == len(ref_renoised) == len(t) - 1
    for step, (ours, reference) in enumerate(zip(renoised, ref_renoised, strict=True)):
        error = relative_error(ours, reference)
        assert error < NOISED, f"re-noised x0 after step {step}: max abs difference {error:.2e}"
    for step, (ours, reference) in enumerate(zip(path, ref_path, strict=True)):
        error = relative_error(ours, reference)
        assert error < STEPPED, f"step {step}: max abs difference {error:.2e}"
    assert np.isfinite(path[-1]).all()


def test_the_stand_in_model_makes_samplers_disagree():
    """Guard against a vacuous comparison: different samplers give different results."""
    start = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    noises = [np.zeros(SHAPE, np.float32)] * 10
    finals = [run_ours(name, "epsilon", 10, start, noises)[2][-1] for name in OURS]
    for i in range(len(finals)):
        for j in range(i + 1, len(finals)):
            assert np.abs(finals[i] - finals[j]).max() > 1e-3


def test_a_later_start_changes_the_image():
    """Guard against a vacuous img2img comparison: the strength matters on both sides."""
    rng = np.random.default_rng(1)
    x0 = rng.standard_normal(SHAPE).astype(np.float32)
    noises = [rng.standard_normal(SHAPE).astype(np.float32) for _ in range(11)]
    for name in OURS:
        strong = img2img_ours(name, "epsilon", 10, 1.0, x0, noises)
        weak = img2img_ours(name, "epsilon", 10, 0.3, x0, noises)
        assert np.abs(strong[1] - weak[1]).max() > 0.1  # the starting noise level
        assert np.abs(strong[3][-1] - weak[3][-1]).max() > 1e-3
