"""``torch.randn`` on the CPU, reproduced in NumPy: the starting noise ComfyUI,
stable-diffusion.cpp's ``--rng cpu`` and diffusers with a CPU generator draw.

What PyTorch does (ATen's CPU generator and its ``normal_fill``, read for the facts):

- ``torch.manual_seed(seed)`` seeds a Mersenne Twister (MT19937) the standard way
  (``init_genrand`` with the low 32 bits of the seed), which NumPy's ``MT19937`` does with
  its legacy seeding.
- ``torch.randn`` of a contiguous float32 tensor of at least 16 elements first fills the
  tensor with uniforms ``(u & (2^24 - 1)) / 2^24``, one 32-bit draw each, then turns each
  block of 16 into normals by Box-Muller: for j < 8, with ``u1 = 1 - x[j]`` and ``u2 =
  x[j + 8]``, ``x[j] = r cos(2 pi u2)`` and ``x[j + 8] = r sin(2 pi u2)`` where ``r =
  sqrt(-2 log u1)``. When the size is not a multiple of 16, the last 16 elements are
  drawn again from 16 fresh uniforms and transformed the same way.

The arithmetic here is float32, as PyTorch's; its vectorised log/sin/cos may differ from
NumPy's in the last bit, so results agree to about 1e-6, not always bit for bit.
"""

from __future__ import annotations

import numpy as np

#: ``torch.randn``'s Box-Muller path needs at least this many elements; smaller draws
#: take another path that sdgen never needs (a latent has at least 256 elements).
BLOCK = 16


class TorchCpuGenerator:
    """A ``torch.Generator`` on the CPU after ``manual_seed(seed)``, for float32 normals."""

    def __init__(self, seed: int):
        self._bits = np.random.MT19937(0)
        self._bits._legacy_seeding(int(seed) & 0xFFFFFFFF)

    def _uniforms(self, count: int) -> np.ndarray:
        raw = self._bits.random_raw(count).astype(np.uint32)
        return (raw & np.uint32((1 << 24) - 1)).astype(np.float32) * np.float32(2.0**-24)

    def randn(self, shape: tuple[int, ...]) -> np.ndarray:
        """What ``torch.randn(shape, generator=g)`` returns next, as a float32 array."""
        size = int(np.prod(shape))
        if size < BLOCK:
            raise ValueError(f"torch-cpu noise needs at least {BLOCK} elements, got {size}")
        data = self._uniforms(size)
        whole = size - size % BLOCK
        data[:whole] = _box_muller(data[:whole].reshape(-1, BLOCK)).reshape(-1)
        if size % BLOCK:
            data[size - BLOCK :] = _box_muller(self._uniforms(BLOCK)[None])[0]
        return data.reshape(shape)


def _box_muller(blocks: np.ndarray) -> np.ndarray:
    """Blocks of 16 uniforms (n, 16) as 16 normals each, in float32 as ATen computes."""
    u1 = np.float32(1.0) - blocks[:, :8]
    u2 = blocks[:, 8:]
    radius = np.sqrt(np.float32(-2.0) * np.log(u1))
    theta = np.float32(2.0 * np.pi) * u2
    return np.concatenate([radius * np.cos(theta), radius * np.sin(theta)], axis=1)
