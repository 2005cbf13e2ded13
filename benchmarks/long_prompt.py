"""What a long prompt costs per denoising step: contexts of 77, 154 and 308 tokens.

A prompt of up to 75 CLIP tokens is one 77-token chunk; 150 tokens are two chunks (a
154-token context) and 300 tokens four (308). The text encoder runs once per chunk, and
the U-Net's cross-attention attends to every token of the context at every step, so a
longer prompt costs more in both. This measures, side by side in one run, with full-size
SD 1.x networks (random weights, built once, see ``tests/full_size.py``: fan-in scaled
normals, so no denormal or all-zero shortcut applies), on the TensorFlow runtime's CPU
path (``split_batch``: one U-Net call per row):

- the text stage per prompt: ``Pipeline.encode("", prompt)``, the negative prompt's one
  chunk and the prompt's k chunks in one batch;
- one U-Net row per step for each context length, and what a guided step costs (a
  77-token negative row plus the prompt's row, which run as two calls on the CPU).

Each call is traced and run once before it is timed, and the best of ``--repeats`` is
kept.

    python benchmarks/long_prompt.py                 # 512x512: the README's figures
    python benchmarks/long_prompt.py --size 128 --repeats 1   # a quick check that it runs

Needs about 10 GB free (9 GB at --size 128: the weights are full size); run nothing else
beside it. A benchmark, not a test: it prints figures and ratios; machines are noisy.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import numpy as np
from machine import cpu_model

#: One CLIP token each, and no comma, so the chunks are exactly full.
WORDS = ("red", "house", "on", "a", "green", "hill", "under", "blue", "sky")
TOKEN_COUNTS = (75, 150, 300)


def prompt_of(tokens: int) -> str:
    return " ".join(WORDS[i % len(WORDS)] for i in range(tokens))


def best_of(repeats: int, call) -> float:
    """The fastest of ``repeats`` timed calls, after one untimed call (tracing)."""
    call()
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - began)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="width and height in pixels")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls each (best kept)")
    args = parser.parse_args()

    import tensorflow as tf
    from full_size import full_size_networks

    from sdgen.catalog import get_model_spec
    from sdgen.pipeline import DeviceSettings, Pipeline, initial_latents, timestep_embedding
    from sdgen.runtimes.signature import NetworkSignature
    from sdgen.text.chunks import chunk_prompt
    from sdgen.text.tokenizer import load_tokenizer

    size = args.size
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} CPUs, TensorFlow {tf.__version__}, "
        "XLA off, float32"
    )
    began = time.perf_counter()
    networks = full_size_networks(size, size)
    built = time.perf_counter() - began
    print(f"built full-size SD v1 networks for {size}x{size} in {built:.1f} s")
    spec, tokenizer = get_model_spec("sd-v1.4"), load_tokenizer()
    pipeline = Pipeline(spec, tokenizer, *networks, DeviceSettings(split_batch=True))
    latents = initial_latents(0, size, size)[None]
    t_emb = timestep_embedding(500.0, 320)[None]

    rows = []
    for count in TOKEN_COUNTS:
        prompt = prompt_of(count)
        chunks = chunk_prompt(tokenizer, prompt)
        assert chunks.token_count == count, (count, chunks.counted)
        conditioning = pipeline.encode("", prompt)
        length = conditioning.positive_length
        encode = best_of(args.repeats, lambda p=prompt: pipeline.encode("", p))
        unet = pipeline.backend.networks(NetworkSignature(size, size, length))
        row = best_of(
            args.repeats,
            lambda u=unet, c=conditioning: u.denoise(latents, t_emb, c.positive),
        )
        rows.append((chunks.counted, length, encode, row))

    base_encode, base_row = rows[0][2], rows[0][3]
    print(
        f"\n{size}x{size}, one U-Net row per call (the CPU path), best of {args.repeats}; "
        "a guided step is a 77-token negative row plus the prompt's row"
    )
    header = ("prompt", "context", "encode s", "x", "s/row", "x", "s/guided step", "x")
    print("{:>9}{:>9}{:>10}{:>7}{:>9}{:>7}{:>15}{:>7}".format(*header))
    for counted, length, encode, row in rows:
        guided = base_row + row
        print(
            f"{counted:>9}{length:>9}{encode:10.3f}{encode / base_encode:7.2f}"
            f"{row:9.3f}{row / base_row:7.2f}{guided:15.3f}{guided / (2 * base_row):7.2f}"
        )
    assert all(np.isfinite(row) for *_, row in rows)


if __name__ == "__main__":
    main()
