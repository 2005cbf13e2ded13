"""Seconds to switch LoRAs: ``set_weight_deltas`` on the TensorFlow and OpenVINO runtimes.

Loads a model on each runtime asked for, makes two random LoRA-like delta sets A and B
that touch every attention and feed-forward projection of the U-Net (every 2-D kernel
inside a spatial transformer: q, k, v, out, GEGLU, FF) and of the text encoder (every
2-D kernel of the CLIP layers), each of rank 16 (``delta = down @ up``, the Keras
``(in, out)`` layout of kohya's ``up @ down``), and times, through the backend method
only: none -> A, A -> B, B -> none (``{}``). After each switch one text encoding and
one U-Net row run, timed apart (the "+" figure): a runtime may defer work to the first
call after a switch, and that too is paid before the next image. Each run checks that
A changed the prediction, that ``{}`` gave back the base bit for bit, and that no
switch converted a file.

- TensorFlow: ``TensorFlowBackend.set_weight_deltas`` restores the touched variables
  from pristine copies and adds the deltas in place; nothing is retraced.
- OpenVINO: ``OpenVinoBackend.set_weight_deltas`` reads the cached base file (mapped),
  replaces the touched constants by base + delta and compiles in memory; nothing is
  converted (the one conversion, on first use, is timed apart as "convert").

Weights: ``--model tiny`` loads the tiny model (``load_pipeline``); any other model
(default ``sd-v1.5``) gets its full-size networks with random fan-in-scaled weights
(``fill_deterministically``, as ``tests/full_size.py`` and the other benchmarks), so
nothing is downloaded. OpenVINO's converted files go to
``$SDGEN_CACHE/openvino/<model>-random-<fingerprint>`` and are reused by later runs.

    python benchmarks/lora_switch.py                       # full size: ~20 GB, minutes
    python benchmarks/lora_switch.py --model tiny --size 128   # a quick check that it runs

Full size needs about 20 GB free on the first OpenVINO run (the conversion), less after;
run nothing else beside it. A benchmark, not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import numpy as np
from machine import cpu_model

RUNTIMES = ("tensorflow", "openvino")
SWITCHES = ("none -> A", "A -> B", "B -> none")


def projections(network, role: str) -> list[int]:
    """Positions of the 2-D kernels a LoRA of SD touches: attention and feed-forward
    projections (inside a spatial transformer; inside a CLIP layer)."""
    inside = "transformer" if role == "diffusion_model" else "clip_encoder_layer"
    return [
        i
        for i, w in enumerate(network.weights)
        if len(w.shape) == 2 and w.path.endswith("kernel") and inside in w.path
    ]


def lora_like(shapes: dict[tuple[str, int], tuple[int, int]], seed: int, rank: int = 16):
    """A rank-``rank`` delta ``down @ up`` for each ``(role, position)``: shape ``(in, out)``."""
    rng = np.random.default_rng(seed)
    deltas = {}
    for key, (rows, columns) in shapes.items():
        down = rng.standard_normal((rows, rank)).astype(np.float32) / np.float32(rows)
        up = rng.standard_normal((rank, columns)).astype(np.float32) * np.float32(0.1)
        deltas[key] = down @ up
    return deltas


def keras_networks(model: str, size: int):
    """``(spec, load)``: ``load(role, signature)`` builds a randomly filled network."""
    from sdgen.catalog import get_model_spec
    from sdgen.families import family_of
    from sdgen.families.tiny import fill_deterministically

    spec = get_model_spec(model)
    roles = ("text_encoder", "diffusion_model", "decoder")

    def load(role, signature):
        network = family_of(spec).build(
            role, spec, signature.height, signature.width, signature.context_length
        )
        fill_deterministically(network, roles.index(role))
        return network

    return spec, load


def backend_of(runtime: str, model: str, size: int):
    """``(backend, shapes source networks, seconds to load, files converted)``."""
    from sdgen.runtimes.signature import NetworkSignature

    signature = NetworkSignature(size, size)
    began = time.perf_counter()
    if model == "tiny":
        from sdgen.pipeline import load_pipeline

        backend = load_pipeline("tiny", width=size, height=size, runtime=runtime).backend
    elif runtime == "tensorflow":
        from sdgen.runtimes.tensorflow import DeviceSettings, TensorFlowBackend

        spec, load = keras_networks(model, size)
        networks = [load(role, signature) for role in ("text_encoder", "diffusion_model")]
        backend = TensorFlowBackend(spec, *networks, load("decoder", signature), DeviceSettings())
    else:
        from sdgen.runtimes.openvino import OpenVinoBackend, fingerprint
        from sdgen.weights import cache_dir

        spec, load = keras_networks(model, size)
        folder = cache_dir() / "openvino" / f"{spec.name}-random-{fingerprint(spec, {})}"
        backend = OpenVinoBackend(spec, folder, load)
    backend.networks(signature)
    return backend, signature, time.perf_counter() - began


def delta_shapes(model: str, size: int) -> dict[tuple[str, int], tuple[int, int]]:
    """The shapes of every projection, from Keras networks built once (then dropped)."""
    from sdgen.runtimes.signature import NetworkSignature

    _, load = keras_networks(model, size)
    shapes = {}
    for role in ("text_encoder", "diffusion_model"):
        network = load(role, NetworkSignature(size, size))
        for position in projections(network, role):
            shapes[(role, position)] = tuple(int(n) for n in network.weights[position].shape)
        del network
        gc.collect()
    return shapes


def measure(runtime: str, model: str, size: int, sets) -> dict:
    backend, signature, loaded = backend_of(runtime, model, size)
    from sdgen.families import family_of

    tokens = (np.arange(77, dtype=np.int32) + 300)[None]
    positions = np.arange(77, dtype=np.int32)[None]
    unet = backend.networks(signature)
    rng = np.random.default_rng(0)
    latents = rng.standard_normal((1, *signature.latent_shape)).astype(np.float32)
    width = backend.encode(tokens, positions).shape[-1]
    contexts = rng.standard_normal((1, 77, width)).astype(np.float32)
    t_emb_width = family_of(backend.spec).timestep_embedding_dim
    t_emb = rng.standard_normal((1, t_emb_width)).astype(np.float32)

    def call():
        backend.encode(tokens, positions)
        return unet.denoise(latents, t_emb, contexts)

    base = call()
    converted = list(getattr(backend, "converted", []))
    row = {"load": loaded, "switches": [], "first": []}
    outputs = []
    for deltas in sets:
        began = time.perf_counter()
        backend.set_weight_deltas(deltas)
        row["switches"].append(time.perf_counter() - began)
        began = time.perf_counter()
        outputs.append(call())
        row["first"].append(time.perf_counter() - began)
    assert np.abs(outputs[0] - base).max() > 0, "the deltas changed nothing"
    assert np.array_equal(outputs[-1], base), "{} did not give back the base model"
    assert list(getattr(backend, "converted", [])) == converted, "a switch converted"
    row["converted"] = converted
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sd-v1.5", help="tiny, or a full-size model [sd-v1.5]")
    parser.add_argument("--size", type=int, default=512, help="width and height in pixels")
    parser.add_argument("--runtimes", default=",".join(RUNTIMES), help="comma-separated")
    args = parser.parse_args()
    runtimes = args.runtimes.split(",")

    shapes = delta_shapes(args.model, args.size)
    a, b = lora_like(shapes, seed=1), lora_like(shapes, seed=2)
    sets = (a, b, {})
    touched = {
        role: sum(1 for r, _ in shapes if r == role) for role in ("text_encoder", "diffusion_model")
    }
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} CPUs; model {args.model} at "
        f"{args.size}x{args.size}; rank 16 on {touched['diffusion_model']} U-Net and "
        f"{touched['text_encoder']} text-encoder projections"
    )
    rows = {}
    for runtime in runtimes:
        try:
            rows[runtime] = measure(runtime, args.model, args.size, sets)
        except AttributeError as error:  # a backend without set_weight_deltas
            rows[runtime] = {"error": str(error)}
        gc.collect()
    print(f"\n{'runtime':<12}{'load s':>9}" + "".join(f"{s:>22}" for s in SWITCHES))
    for runtime, row in rows.items():
        if "error" in row:
            print(f"{runtime:<12}{row['error']}")
            continue
        cells = "".join(
            f"{switch:9.3f} s (+{first:6.3f})"
            for switch, first in zip(row["switches"], row["first"], strict=True)
        )
        print(f"{runtime:<12}{row['load']:9.1f}{cells}")
        if row["converted"]:
            print(f"{'':<12}load converted: {', '.join(row['converted'])}")
    print(
        "\neach cell: set_weight_deltas seconds (+ the first text encoding and U-Net row "
        "after it); 'load' includes any first conversion"
    )


if __name__ == "__main__":
    main()
