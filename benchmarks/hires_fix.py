"""Seconds and peak memory of a hires fix at full size: txt2img at 512, enlarged to
1024, then the img2img pass at 1024 (the time the issue asks the README to give).

The full-size SD 1.x networks get random fan-in-scaled weights (``tests/full_size.py``),
so nothing is downloaded; the timings are those of real weights, the pixels are not.
The first pass and the hires pass are timed apart through the step callback, and the
decode with them; peak RSS is the process's (``resource.getrusage``).

    python benchmarks/hires_fix.py                  # 512 -> 1024, 10 + 10 steps, TensorFlow
    python benchmarks/hires_fix.py --steps 20 --upscaler lanczos

Full size at 1024 needs about 20 GB: run nothing else beside it. A benchmark, not a
test: it prints figures.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from machine import cpu_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512, help="first pass size [512]")
    parser.add_argument("--scale", type=float, default=2.0, help="hires scale [2]")
    parser.add_argument("--steps", type=int, default=10, help="steps of each pass [10]")
    parser.add_argument("--denoise", type=float, default=0.7, help="hires denoise [0.7]")
    parser.add_argument("--upscaler", default="latent", help="hires upscaler [latent]")
    parser.add_argument("--sampler", default="dpmpp-2m-karras")
    args = parser.parse_args()

    from full_size import full_size_networks

    from sdgen.catalog import get_model_spec
    from sdgen.config import GenerationConfig
    from sdgen.pipeline import Pipeline
    from sdgen.text.tokenizer import ClipTokenizer

    began = time.perf_counter()
    spec = get_model_spec("sd-v1.5")
    text_encoder, unet, decoder = full_size_networks(args.size, args.size)
    pipeline = Pipeline(spec, ClipTokenizer(), text_encoder, unet, decoder)
    built = time.perf_counter() - began
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; networks built in {built:.1f} s")
    config = GenerationConfig(
        "a lighthouse on a cliff at dusk",
        steps=args.steps,
        sampler=args.sampler,
        width=args.size,
        height=args.size,
        seed=1,
        hires=True,
        hires_scale=args.scale,
        hires_upscaler=args.upscaler,
        hires_denoise=args.denoise,
    )
    for note in pipeline.notes(config):
        print(note)
    marks: list[float] = []

    def step(k, index, steps, latents):
        marks.append(time.perf_counter())
        print(f"step {index + 1}/{steps}: {marks[-1] - start:.1f} s", flush=True)

    start = time.perf_counter()
    image = pipeline.generate(config, step)[0]
    end = time.perf_counter()
    first, hires = args.steps, len(marks) - args.steps
    first_end = marks[first - 1]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    size = image.pixels.shape[1]
    first_s, hires_s = first_end - start, marks[-1] - first_end
    print(f"first pass {args.size} px: {first} steps in {first_s:.1f} s (tracing included)")
    print(f"hires pass {size} px: {hires} steps in {hires_s:.1f} s")
    print(f"decode {size} px: {end - marks[-1]:.1f} s")
    print(f"total {end - start:.1f} s; peak RSS {peak:.1f} GB")


if __name__ == "__main__":
    main()
