"""GPU figures in one command (under 5 minutes on one data-centre GPU).

Runs the full-size SD v1 networks (random fan-in scaled weights, so no download) with
sdgen's pipeline and with keras_cv's ``text_to_image`` on the same networks, and prints:

- seconds per step at batch 3, 512x512, with XLA and ``mixed_float16`` (the setting of
  KerasCV's published figure: 158 ms per step on an A100), for both;
- the same without XLA and in float32, for sdgen;
- correctness: every image is finite and not all black (sdgen's pipeline refuses such
  images), and the mixed-precision images against the float32 ones (mean and max
  absolute pixel difference, from the same starting noise);
- ``--batch-size auto``: the free memory ``nvidia-smi`` reported before loading, the batch
  it gives at the size, and a 3-step run of that many images (whether it had to halve).

    python benchmarks/gpu.py                      # on a GPU machine
    python benchmarks/gpu.py --size 128 --steps 3 --batch 1   # a dry run on a CPU

This is a benchmark, not a test. Steps are timed between the pipeline's step callbacks
after a warm-up run that pays for tracing and XLA compilation.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import numpy as np

PROMPT = "photograph of an astronaut riding a horse"
PUBLISHED_MS_PER_STEP = 158  # KerasCV, A100, XLA + mixed precision, batch 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--batch", type=int, default=3)
    args = parser.parse_args()

    import keras
    import tensorflow as tf
    from full_size import full_size_networks

    from sdgen.catalog import get_model_spec
    from sdgen.config import GenerationConfig
    from sdgen.pipeline import DeviceSettings, Pipeline
    from sdgen.runtimes.memory import gpu_free_bytes
    from sdgen.text.tokenizer import load_tokenizer

    free = gpu_free_bytes()  # before TensorFlow reserves the GPU's memory
    gpus = tf.config.list_physical_devices("GPU")
    device = "GPU" if gpus else "CPU"
    name = tf.config.experimental.get_device_details(gpus[0]).get("device_name") if gpus else ""
    print(f"device: {device} {name}, TensorFlow {tf.__version__}")
    size, spec, tokenizer = args.size, get_model_spec("sd-v1.4"), load_tokenizer()
    # DDIM: what keras_cv's text_to_image, timed beside it, runs
    config = GenerationConfig(
        PROMPT, steps=args.steps, sampler="ddim", width=size, height=size, seed=0,
        num_images=args.batch, batch_size=args.batch,
    )  # fmt: skip

    began = time.perf_counter()
    keras.mixed_precision.set_global_policy("float32")
    fp32 = full_size_networks(size, size)
    keras.mixed_precision.set_global_policy("mixed_float16")
    mixed = full_size_networks(size, size)  # the same weights: filled from the same seeds
    keras.mixed_precision.set_global_policy("float32")
    print(f"built the networks twice in {time.perf_counter() - began:.0f} s")

    def sdgen_run(networks, xla: bool, mixed_precision: bool):
        settings = DeviceSettings(xla, mixed_precision, split_batch=not gpus, device=device)
        pipeline = Pipeline(spec, tokenizer, *networks, settings)
        warm = dataclasses.replace(config, steps=2)
        began = time.perf_counter()
        pipeline.generate(warm)
        compile_seconds = time.perf_counter() - began
        stamps = []
        images = pipeline.generate(
            config, callback=lambda k, *_: stamps.append(time.perf_counter()) if k == 0 else None
        )
        per_step = float(np.median(np.diff(stamps))) if len(stamps) > 1 else float("nan")
        return np.stack([image.pixels for image in images]), per_step, compile_seconds

    rows, pixels = [], {}
    for label, networks, xla, mp in [
        ("sdgen, XLA + mixed_float16", mixed, True, True),
        ("sdgen, mixed_float16", mixed, False, True),
        ("sdgen, XLA, float32", fp32, True, False),
        ("sdgen, float32", fp32, False, False),
    ]:
        pixels[label], per_step, warm = sdgen_run(networks, xla, mp)
        rows.append((label, per_step, warm))

    from keras_cv.models import StableDiffusion

    keras_cv = StableDiffusion(img_height=size, img_width=size, jit_compile=True)
    keras_cv._text_encoder, keras_cv._diffusion_model, keras_cv._decoder = mixed
    keras_cv._tokenizer = tokenizer
    keras_cv.text_to_image(PROMPT, batch_size=args.batch, num_steps=2)  # warm-up
    began = time.perf_counter()
    keras_cv.text_to_image(PROMPT, batch_size=args.batch, num_steps=args.steps)
    whole = time.perf_counter() - began
    rows.append(("keras_cv text_to_image, XLA + mixed_float16", whole / args.steps, float("nan")))

    print(f"\n{size}x{size}, batch {args.batch}, {args.steps} DDIM steps, guidance 7.5")
    print(f"{'':46}{'ms/step':>9}{'warm-up s':>11}")
    for label, per_step, warm in rows:
        print(f"{label:46}{per_step * 1000:9.0f}{warm:11.1f}")
    print("(keras_cv's figure is its whole call, decode included, divided by the steps)")
    best = rows[0][1] * 1000
    print(f"published KerasCV figure, A100: {PUBLISHED_MS_PER_STEP} ms/step; sdgen here / that: "
          f"{best / PUBLISHED_MS_PER_STEP:.2f}")  # fmt: skip
    reference = pixels["sdgen, float32"].astype(int)
    for label in pixels:
        difference = np.abs(pixels[label].astype(int) - reference)
        print(f"{label:46} vs float32: mean {difference.mean():.2f}, max {difference.max()} "
              f"(of 255); finite and not black: checked by the pipeline")  # fmt: skip

    if gpus and free is not None:
        settings = DeviceSettings(False, True, split_batch=False, device=device, free_memory=free)
        pipeline = Pipeline(spec, tokenizer, *mixed, settings)
        chosen = pipeline.backend.auto_batch_size(size, size)
        auto = dataclasses.replace(config, steps=3, num_images=chosen, batch_size="auto")
        began = time.perf_counter()
        images = pipeline.generate(auto)
        fitted = pipeline.auto_batch_size(size, size)
        print(f"--batch-size auto, mixed_float16: {free / 2**30:.1f} GiB free before loading "
              f"-> {chosen} images at {size}x{size}; {len(images)} images x 3 steps ran in "
              f"{time.perf_counter() - began:.0f} s with batches of {fitted} "
              "(two sets of weights are loaded here, the estimate counts one)")  # fmt: skip


if __name__ == "__main__":
    main()
