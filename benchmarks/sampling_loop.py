"""Time sdgen's denoising loop against keras_cv's ``text_to_image`` loop, side by side.

Both run the same full-size SD v1 networks (random weights, built once), at the same
size, steps and guidance, from the same initial noise, without XLA. keras_cv calls the
U-Net twice per step through ``predict_on_batch``; sdgen calls it once on a batch of two
inside a compiled ``tf.function``. Each side gets a one-step warm-up run first, so
tracing is not counted.

    python benchmarks/sampling_loop.py --size 256 --steps 4

This is a benchmark, not a test: it prints figures and ratios; machines are noisy.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="width and height in pixels")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per side (best kept)")
    args = parser.parse_args()

    import tensorflow as tf
    from full_size import full_size_networks
    from keras_cv.models import StableDiffusion

    from sdgen.catalog import get_model_spec
    from sdgen.config import GenerationConfig
    from sdgen.pipeline import DeviceSettings, Pipeline, initial_latents
    from sdgen.text.tokenizer import load_tokenizer

    size, steps = args.size, args.steps
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"TensorFlow {tf.__version__}, XLA off"
    )
    began = time.perf_counter()
    networks = full_size_networks(size, size)
    print(
        f"built full-size SD v1 networks for {size}x{size} in {time.perf_counter() - began:.1f} s"
    )
    prompt = "photograph of an astronaut riding a horse"
    noise = initial_latents(0, size, size)[None]

    keras_cv = StableDiffusion(img_height=size, img_width=size, jit_compile=False)
    keras_cv._text_encoder, keras_cv._diffusion_model, keras_cv._decoder = networks
    keras_cv._tokenizer = load_tokenizer()
    encoded = keras_cv.encode_text(prompt)

    def run_keras_cv(n):
        return keras_cv.generate_image(
            encoded,
            num_steps=n,
            unconditional_guidance_scale=args.guidance,
            diffusion_noise=noise,
        )

    spec, tokenizer = get_model_spec("sd-v1.4"), load_tokenizer()
    pipeline = Pipeline(spec, tokenizer, *networks, DeviceSettings(split_batch=True))
    fused = Pipeline(spec, tokenizer, *networks, DeviceSettings(split_batch=False))

    step_times = {}

    def sdgen_runner(pipe, name):
        def run(n):
            config = GenerationConfig(  # DDIM: the loop keras_cv's text_to_image runs
                prompt,
                steps=n,
                sampler="ddim",
                guidance_scale=args.guidance,
                width=size,
                height=size,
                seed=0,
            )
            stamps = []
            pipe.generate(config, callback=lambda *_: stamps.append(time.perf_counter()))
            if len(stamps) > 1:  # time between step callbacks: one whole step each
                step_times[name] = float(np.median(np.diff(stamps)))

        return run

    latents = tf.constant(noise)
    decode = tf.function(lambda x: networks[2](x, training=False))
    decode(latents)

    def timed(fn):
        fn(1)  # warm-up: traces and allocates
        best = float("inf")
        for _ in range(args.repeats):
            began = time.perf_counter()
            fn(steps)
            best = min(best, time.perf_counter() - began)
        return best

    began = time.perf_counter()
    decode(latents)
    decode_seconds = time.perf_counter() - began
    results = {
        "keras_cv text_to_image": timed(run_keras_cv),
        "sdgen": timed(sdgen_runner(pipeline, "sdgen")),
        "sdgen, fused 2B U-Net call": timed(sdgen_runner(fused, "fused")),
    }

    print(
        f"\n{size}x{size}, {steps} DDIM steps, guidance {args.guidance}, batch 1, "
        f"best of {args.repeats}; decode alone {decode_seconds:.2f} s"
    )
    print(f"{'':28}{'s/image':>10}{'s/step':>10}")
    per_step = {}
    for name, seconds in results.items():
        per_step[name] = (seconds - decode_seconds) / steps
        print(f"{name:28}{seconds:10.2f}{per_step[name]:10.2f}")
    # what one step costs beyond the bare U-Net call: the sampler maths and Python
    from sdgen.pipeline.guidance import predict_noise
    from sdgen.runtimes.signature import NetworkSignature

    def networks_at_size(context_length):
        return pipeline.backend.networks(NetworkSignature(size, size, context_length))

    conditioning = pipeline.encode("", prompt)
    t_emb = np.zeros((1, 320), np.float32)
    predict_noise(networks_at_size, noise, t_emb, conditioning, args.guidance)
    began = time.perf_counter()
    for _ in range(steps):
        predict_noise(networks_at_size, noise, t_emb, conditioning, args.guidance)
    bare = (time.perf_counter() - began) / steps
    measured = step_times["sdgen"]
    overhead = measured - bare
    print(f"{'compiled U-Net calls alone':28}{'':10}{bare:10.2f}")
    print(
        f"sdgen step measured between callbacks: {measured:.3f} s; beyond the U-Net calls: "
        f"{overhead * 1000:+.0f} ms ({100 * overhead / measured:+.1f}% of a step)"
    )
    ratio = results["sdgen"] / results["keras_cv text_to_image"]
    step_ratio = per_step["sdgen"] / per_step["keras_cv text_to_image"]
    print(f"{'ratio sdgen / keras_cv':28}{ratio:10.2f}{step_ratio:10.2f}")
    assert np.isfinite(ratio)


if __name__ == "__main__":
    main()
