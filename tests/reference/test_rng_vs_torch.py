"""``--rng torch-cpu`` against PyTorch itself: the starting noise and every ancestral
step's noise are ``torch.randn`` after ``torch.manual_seed(seed)`` on the CPU."""

from __future__ import annotations

import numpy as np
import pytest

from sdgen.config import GenerationConfig
from sdgen.noise import LatentNoise
from sdgen.noise.torch_cpu import TorchCpuGenerator
from sdgen.samplers import EulerAncestralSampler

from .conftest import require

torch = require("torch")

#: PyTorch's vectorised log/sin/cos and NumPy's may differ in the last float32 bit; the
#: largest difference seen is about 5e-7 (normals up to ~5 in magnitude).
TOLERANCE = 1e-6


@pytest.mark.parametrize(
    ("seed", "shape"),
    [
        (0, (4, 8, 8)),  # a 64 px latent: a multiple of 16 elements
        (42, (4, 64, 64)),  # 512 px
        (2**32 - 1, (4, 9, 7)),  # 252 elements: the last 16 are drawn again
        (123, (1, 4, 5, 3)),  # 60 elements, with a batch axis
        (7, (17,)),  # one block and one element over
        (2**40 + 5, (4, 8, 8)),  # torch seeds MT19937 with the low 32 bits
    ],
)
def test_torch_cpu_matches_torch_randn_draw_after_draw(seed, shape):
    ours = TorchCpuGenerator(seed)
    theirs = torch.Generator().manual_seed(seed)
    for _ in range(4):  # the starting noise, then ancestral steps' noise
        expected = torch.randn(shape, generator=theirs).numpy()
        got = ours.randn(shape)
        assert got.dtype == np.float32 and got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)
        assert np.mean(got == expected) > 0.5  # most are bit for bit


def test_latent_noise_is_torch_randn_of_the_nchw_latent_in_channels_last_order():
    noise = LatentNoise("torch-cpu", 1234)
    theirs = torch.Generator().manual_seed(1234)
    for height, width in ((64, 128), (512, 512)):
        expected = torch.randn((1, 4, height // 8, width // 8), generator=theirs)
        expected = expected[0].permute(1, 2, 0).numpy()
        np.testing.assert_allclose(noise.draw(height, width), expected, atol=TOLERANCE)


class _Recording(EulerAncestralSampler):
    """Euler ancestral that records the unit starting noise and each step's noise."""

    def __init__(self):
        super().__init__()
        self.start_noise, self.step_noise = [], []

    def start(self, steps, prediction_type, start_index=0):
        run = super().start(steps, prediction_type, start_index)
        recorder, scale, step = self, run.scale_model_input, run.step

        def scale_model_input(sample, index):
            if index == 0:
                recorder.start_noise.append(sample / np.float32(run.init_noise_sigma))
            return scale(sample, index)

        def record_step(output, index, sample, noise=None):
            recorder.step_noise.append(noise)
            return step(output, index, sample, noise)

        run.scale_model_input, run.step = scale_model_input, record_step
        return run


def test_pipeline_draws_start_and_ancestral_noise_as_torch_per_image(tiny_pipeline):
    sampler = _Recording()
    config = GenerationConfig(
        "a fox", steps=3, width=128, height=128, seed=77, num_images=2, batch_size=2,
        sampler=sampler, rng="torch-cpu",
    )  # fmt: skip
    tiny_pipeline.generate(config)
    for k in range(2):  # image k: its own generator, seeded with seed + k
        theirs = torch.Generator().manual_seed(77 + k)
        draws = [torch.randn((4, 16, 16), generator=theirs).permute(1, 2, 0) for _ in range(4)]
        np.testing.assert_allclose(sampler.start_noise[0][k], draws[0].numpy(), atol=1e-5)
        for step in range(3):
            np.testing.assert_allclose(
                sampler.step_noise[step][k], draws[step + 1].numpy(), atol=TOLERANCE
            )
