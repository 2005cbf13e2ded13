"""``--batch-size auto``: the backend's estimate from free memory, and the pipeline
halving a batch that runs out of memory anyway, without changing a pixel."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from sdgen.config import GenerationConfig
from sdgen.errors import ConfigError, OutOfMemoryError
from sdgen.families import FAMILIES
from sdgen.runtimes import memory

GIB = 1 << 30


def config(**overrides) -> GenerationConfig:
    values = {"prompt": "a lighthouse", "steps": 2, "width": 128, "height": 128, "seed": 3}
    return GenerationConfig(**{**values, **overrides})


def test_config_takes_a_whole_number_or_auto():
    assert config(batch_size="auto").batch_size == "auto"
    with pytest.raises(ConfigError, match="whole number or 'auto', got 'big'"):
        config(batch_size="big")
    with pytest.raises(ConfigError, match="at least 1"):
        config(batch_size=0)


class _MemoryLimited:
    """The real tiny networks on a backend that guesses ``guess`` images per batch and
    runs out of memory for more than ``fits`` images (two U-Net rows each)."""

    def __init__(self, backend, guess: int, fits: int):
        self.backend, self.guess, self.fits = backend, guess, fits
        self.calls: list[int] = []  # images per U-Net call, in call order

    def auto_batch_size(self, height, width):
        return self.guess

    def encode(self, tokens, positions):
        return self.backend.encode(tokens, positions)

    def networks(self, signature):
        from sdgen.runtimes import Networks

        real = self.backend.networks(signature)

        def denoise(latents, t_emb, contexts):
            images = len(latents) // 2
            self.calls.append(images)
            if images > self.fits:
                raise MemoryError(f"{images} images do not fit")
            return real.denoise(latents, t_emb, contexts)

        return Networks(signature, denoise, real.decode)


def _limited(tiny_pipeline, guess, fits):
    from sdgen.pipeline import Pipeline

    backend = _MemoryLimited(tiny_pipeline.backend, guess, fits)
    pipeline = Pipeline.with_backend(
        tiny_pipeline.spec, tiny_pipeline.tokenizer, backend, tiny_pipeline.device
    )
    return pipeline, backend


def test_auto_halves_a_batch_that_runs_out_of_memory_and_keeps_every_pixel(tiny_pipeline):
    pipeline, backend = _limited(tiny_pipeline, guess=4, fits=2)
    images = pipeline.generate(config(num_images=5, batch_size="auto"))
    assert [image.index for image in images] == [0, 1, 2, 3, 4]
    # two steps per batch: 4 failed at once, then the same images by 2
    assert backend.calls == [4, 2, 2, 2, 2, 1, 1]
    reference = tiny_pipeline.generate(config(num_images=5, batch_size=1))
    for image, expected in zip(images, reference, strict=True):
        assert np.array_equal(image.pixels, expected.pixels)
    # the size that fitted is remembered for the next prompt at this size
    backend.calls.clear()
    pipeline.generate(config(num_images=2, batch_size="auto"))
    assert backend.calls == [2, 2]


def test_a_fixed_batch_size_that_does_not_fit_is_an_error(tiny_pipeline):
    pipeline, backend = _limited(tiny_pipeline, guess=4, fits=2)
    with pytest.raises(OutOfMemoryError, match="batch size 4; try --batch-size 1"):
        pipeline.generate(config(num_images=4, batch_size=4))
    assert backend.calls == [4]


def test_auto_reports_when_even_one_image_does_not_fit(tiny_pipeline):
    pipeline, backend = _limited(tiny_pipeline, guess=2, fits=0)
    with pytest.raises(OutOfMemoryError, match=r"batch size 1 \(chosen by --batch-size auto\)"):
        pipeline.generate(config(num_images=2, batch_size="auto"))
    assert backend.calls == [2, 1]


def test_tensorflow_backend_uses_one_image_per_batch_on_a_cpu(tiny_pipeline):
    assert tiny_pipeline.device.device == "CPU"
    assert tiny_pipeline.backend.auto_batch_size(512, 512) == 1


def _gpu_backend(tiny_pipeline, free, mixed_precision=True):
    from sdgen.catalog import get_model_spec
    from sdgen.runtimes.tensorflow import DeviceSettings, TensorFlowBackend

    device = DeviceSettings(device="GPU", free_memory=free, mixed_precision=mixed_precision)
    spec = get_model_spec("sd-v1.4")  # the full-size estimate, on the tiny networks
    return TensorFlowBackend(
        spec,
        tiny_pipeline.text_encoder,
        tiny_pipeline.diffusion_model,
        tiny_pipeline.decoder,
        device,
    )


def test_gpu_estimate_follows_free_memory_size_and_precision(tiny_pipeline):
    def fit(free, size=512, mixed_precision=True):
        backend = _gpu_backend(tiny_pipeline, free, mixed_precision)
        return backend.auto_batch_size(size, size)

    assert fit(None) == 1  # free memory unknown
    assert fit(1 * GIB) == 1  # too little: one image, which then fails clearly
    # 12 GiB less the decoder's 0.5 GiB and 1 GiB headroom (the tiny weights are a few
    # MB) leaves 11.3e9 bytes; an SD 1 image at 512 px in float16 needs 2 rows x 0.84e9
    assert fit(12 * GIB) == 6
    assert fit(16 * GIB) > fit(12 * GIB) > fit(12 * GIB, mixed_precision=False)
    assert fit(16 * GIB, size=768) < fit(16 * GIB) < fit(16 * GIB, size=256)
    assert fit(1000 * GIB) == memory.MAX_AUTO_BATCH


SD1, SD2 = FAMILIES["sd-v1"], FAMILIES["sd-v2"]


def test_unet_row_estimate_is_dominated_by_attention_at_large_sizes():
    small = memory.unet_row_bytes(SD1, 256, 256, 4)
    large = memory.unet_row_bytes(SD1, 512, 512, 4)
    assert 8 < large / small < 16  # attention grows with the square of the pixels
    assert memory.unet_row_bytes(SD2, 512, 512, 4) < large  # 5 heads, not 8


def _answer(stdout="", error=None):
    calls = []

    def run(command, **_kwargs):
        calls.append(command)
        if error is not None:
            raise error
        return subprocess.CompletedProcess(command, 0, stdout=stdout)

    return run, calls


def test_gpu_free_memory_is_read_from_nvidia_smi(monkeypatch):
    monkeypatch.setattr(memory.shutil, "which", lambda _name: "/usr/bin/nvidia-smi")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    run, calls = _answer("81050\n")
    assert memory.gpu_free_bytes(run) == 81050 * (1 << 20)
    assert calls[0][-2:] == ["-i", "3"]  # the GPU TensorFlow will call GPU:0
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert memory.gpu_free_bytes(_answer("[N/A]\n")[0]) is None
    assert memory.gpu_free_bytes(_answer("")[0]) is None
    failed = subprocess.CalledProcessError(9, "nvidia-smi")
    assert memory.gpu_free_bytes(_answer(error=failed)[0]) is None
    monkeypatch.setattr(memory.shutil, "which", lambda _name: None)
    run, calls = _answer("81050\n")
    assert memory.gpu_free_bytes(run) is None and not calls
