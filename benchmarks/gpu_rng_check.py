"""``--rng torch-cuda`` against ``torch.randn(device="cuda")`` on a real GPU.

For a few seeds and shapes, draws three successive tensors from a CUDA
``torch.Generator`` after ``manual_seed(seed)`` and from sdgen's NumPy copy
(:class:`sdgen.noise.torch_cuda.TorchCudaGenerator`), and prints the largest absolute
difference and the share of values equal bit for bit. sdgen's generator runs twice:
with this card's wave (its SM count times threads per SM, which only matters for
tensors larger than one wave) and as A1111/stable-diffusion.cpp do (no wave: what
``--rng torch-cuda`` uses).

    python benchmarks/gpu_rng_check.py            # on a machine with torch and CUDA

Exit status 0 when every difference is under ``--tolerance`` (the GPU's fast
``__sincosf`` is not NumPy's sin/cos, so a few 1e-6 is expected), 1 otherwise; without
torch or a CUDA device it says so and exits 0 having checked nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from sdgen.noise.torch_cuda import BLOCK_THREADS, TorchCudaGenerator

SEEDS = (0, 1, 42, 2**32 + 7, 2**63 + 12345)
SHAPES = (
    (3, 4),  # A1111's published example
    (4, 8, 8),  # a 64 px latent
    (4, 64, 64),  # 512 px
    (1, 4, 96, 64),  # 512x768 with a batch axis
    (4, 128, 128),  # 1024 px
    (4, 512, 512),  # 4096 px: over one wave on most cards
)
CALLS = 3  # the starting noise, then two ancestral steps' noise


def card_wave(torch) -> tuple[str, int]:
    """The device's name and the most threads ATen's random kernels launch at once."""
    props = torch.cuda.get_device_properties(0)
    per_sm = getattr(props, "max_threads_per_multi_processor", 2048)
    return props.name, props.multi_processor_count * (per_sm // BLOCK_THREADS) * BLOCK_THREADS


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tolerance", type=float, default=1e-5)
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        print("skipped: torch is not installed, so there is no torch.randn to compare with")
        return 0
    if not torch.cuda.is_available():
        print(f"skipped: torch {torch.__version__} sees no CUDA device; nothing was compared")
        return 0
    name, wave = card_wave(torch)
    print(f"torch {torch.__version__}, {name}, wave {wave} threads")
    print(f"{'seed':>20} {'shape':>16} {'call':>4} {'max |diff|':>11} {'exact':>7}  no-wave")
    worst = 0.0
    for seed in SEEDS:
        for shape in SHAPES:
            theirs = torch.Generator(device="cuda").manual_seed(seed)
            ours, plain = TorchCudaGenerator(seed, wave=wave), TorchCudaGenerator(seed)
            for call in range(CALLS):
                expected = torch.randn(shape, generator=theirs, device="cuda").cpu().numpy()
                got, unwaved = ours.randn(shape), plain.randn(shape)
                diff = float(np.abs(got.astype(np.float64) - expected).max())
                unwaved_diff = float(np.abs(unwaved.astype(np.float64) - expected).max())
                exact = float(np.mean(got == expected))
                worst = max(worst, diff)
                print(
                    f"{seed:>20} {shape!s:>16} {call:>4} {diff:>11.3g} {exact:>7.1%}"
                    f"  {unwaved_diff:.3g}"
                )
    verdict = "ok" if worst <= args.tolerance else "MISMATCH"
    print(f"{verdict}: largest difference {worst:.3g} (tolerance {args.tolerance:g})")
    return 0 if verdict == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
