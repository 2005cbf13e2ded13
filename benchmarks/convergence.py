"""How far each sampler and step count lands from a converged image, side by side.

On one model, prompt, seed and size, every combination below runs through the library
(``load_pipeline`` then ``Pipeline.generate``), and its final latent (what the decoder
gets) and decoded pixels are compared with two converged references: DPM++ 2M Karras at
``--reference-steps`` (200) and DDIM at ``--ddim-reference-steps`` (500). Both are
printed, since each reference carries its own solver's error; their distance from each
other says how far "converged" can be trusted. Figures are RMS distances: latent units
(the reference latent's own RMS is printed for scale) and pixel levels of 0-255, with
the seconds per image of each row (after a one-step warm-up, so tracing is not counted).

    python benchmarks/convergence.py                       # the tiny model, 128 px
    python benchmarks/convergence.py --model sd-v1.4 --size 256 --weights DIR

What this measures, honestly: the tiny model (the default) is a random network, so its
rows say how closely each solver follows the probability-flow ODE of *that* network, not
image quality. How many steps make a good image with real weights is published:
Karras et al. 2022 ("Elucidating the Design Space of Diffusion-Based Generative Models",
their noise levels), and Lu et al. 2022 ("DPM-Solver++: Fast Solver for Guided Sampling of
Diffusion Probabilistic Models"), whose DPM-Solver++(2M) reaches near-converged FID in
15-20 steps on SD-class latent models with guidance, where DDIM needs far more. A1111's
default sampler is DPM++ 2M (Karras) at 20 steps, and diffusers' docs recommend
``DPMSolverMultistepScheduler`` at 20-25 steps. Run with ``--model sd-v1.4`` (or any
model with weights) for the real network's figures.

This is a benchmark, not a test: it prints figures; machines are noisy.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
from machine import cpu_model

#: The (sampler, steps) rows compared: keras_cv's DDIM 50, sdgen's default and the
#: samplers and step counts users pick in A1111.
COMBINATIONS = (
    ("ddim", 50),
    ("ddim", 25),
    ("dpmpp-2m-karras", 25),
    ("dpmpp-2m-karras", 15),
    ("dpmpp-2m", 20),
    ("euler", 25),
)
PROMPT = "a lighthouse on a cliff at dusk"


def rms(a: np.ndarray, b: np.ndarray | None = None) -> float:
    difference = a.astype(np.float64) - (0 if b is None else b.astype(np.float64))
    return float(np.sqrt(np.mean(difference**2)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="any model name sdgen knows [tiny]")
    parser.add_argument("--weights", type=Path, help="a weights folder (kcv_*.h5) for --model")
    parser.add_argument("--size", type=int, default=128, help="width and height in pixels")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--reference-steps", type=int, default=200, help="DPM++ 2M Karras")
    parser.add_argument("--ddim-reference-steps", type=int, default=500, help="DDIM")
    args = parser.parse_args()

    import tensorflow as tf

    from sdgen.config import GenerationConfig
    from sdgen.pipeline import load_pipeline
    from sdgen.samplers import get_sampler

    print(
        f"machine: {cpu_model()}, {os.cpu_count()} CPUs, TensorFlow {tf.__version__}, "
        f"model {args.model}, {args.size}x{args.size}, seed {args.seed}, "
        f"guidance {args.guidance}, prompt {args.prompt!r}"
    )
    began = time.perf_counter()
    pipe = load_pipeline(
        args.model, weights_dir=args.weights, width=args.size, height=args.size, xla=False
    )
    print(f"loaded {args.model} in {time.perf_counter() - began:.1f} s")

    def run(sampler: str, steps: int) -> tuple[np.ndarray, np.ndarray, float]:
        """The final latent, the pixels and the seconds of one image."""
        config = GenerationConfig(
            args.prompt,
            steps=steps,
            sampler=sampler,
            guidance_scale=args.guidance,
            width=args.size,
            height=args.size,
            seed=args.seed,
        )
        latents = {}
        began = time.perf_counter()
        [image] = pipe.generate(config, callback=lambda k, i, n, x: latents.update({i: x}))
        return np.array(latents[steps - 1]), image.pixels, time.perf_counter() - began

    run("dpmpp-2m-karras", 1)  # warm-up: traces and allocates
    references = {
        f"dpmpp-2m-karras {args.reference_steps}": run("dpmpp-2m-karras", args.reference_steps),
        f"ddim {args.ddim_reference_steps}": run("ddim", args.ddim_reference_steps),
    }
    (name_a, (latent_a, pixels_a, _)), (name_b, (latent_b, pixels_b, _)) = references.items()
    print(
        f"references: {name_a} and {name_b}; reference latent RMS {rms(latent_a):.4f}; "
        f"they differ by {rms(latent_a, latent_b):.4f} (latent RMS), "
        f"{rms(pixels_a, pixels_b):.2f} (pixel RMS, 0-255)"
    )
    header = (
        f"\n{'sampler':34}{'steps':>6}{'s/image':>9}"
        f"{'latent RMS vs':>15}{'':>12}{'pixel RMS vs':>14}{'':>11}"
    )
    print(header)
    short_a, short_b = (name.replace("dpmpp-2m-karras", "karras") for name in (name_a, name_b))
    print(f"{'':49}{short_a:>15}{short_b:>12}{short_a:>14}{short_b:>11}")
    for sampler, steps in COMBINATIONS:
        latent, pixels, seconds = run(sampler, steps)
        label = f"{get_sampler(sampler).label} ({sampler})"
        print(
            f"{label:34}{steps:6d}{seconds:9.2f}"
            f"{rms(latent, latent_a):15.4f}{rms(latent, latent_b):12.4f}"
            f"{rms(pixels, pixels_a):14.2f}{rms(pixels, pixels_b):11.2f}"
        )
    for name, (_, _, seconds) in references.items():
        print(f"reference {name}: {seconds:.2f} s")


if __name__ == "__main__":
    main()
