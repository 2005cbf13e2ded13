"""``torch.randn`` on a CUDA GPU, reproduced in NumPy: A1111's default "GPU" RNG (and
its "NV" one) and stable-diffusion.cpp's ``--rng cuda``.

What PyTorch does (ATen's CUDA generator and its normal kernel, with cuRAND's Philox
state, read for the facts):

- ``torch.manual_seed(seed)`` keys a Philox 4x32-10 counter-based generator (Salmon et
  al., "Parallel random numbers: as easy as 1, 2, 3", SC11) with ``(seed & 0xffffffff,
  seed >> 32)`` and sets its offset to 0.
- ``torch.randn`` of a float32 tensor launches threads of 256; thread ``t`` starts at the
  128-bit counter ``(step, t)``, ``step`` the offset over 4 (the offset counts 32-bit
  outputs, four to a block), in the low 64 bits and ``t`` in the high 64: the words
  ``(step_lo, step_hi, t_lo, t_hi)``, as A1111 lays them out ``(offset, 0, i, 0)``; and
  each Philox block it makes gives four uniforms, turned into four normals by cuRAND's
  Box-Muller: ``u = a * 2^-32 + 2^-33``, ``v = b * (2 pi 2^-32) + (pi 2^-32)``, ``r =
  sqrt(-2 log u)``, normals ``r sin v`` and ``r cos v`` for the pairs (a, b) = (x0, x1)
  and (x2, x3).
- With as many threads as elements (every tensor up to one "wave" of the GPU: its SM
  count times threads per SM, 132 x 2048 on an H100; a 512x512 latent is 16,384
  elements, more than only the smallest cards' wave), element ``i`` is the
  first normal, ``r sin v`` of (x0, x1), of the block at counter ``(step, i)``; this
  is how A1111 and stable-diffusion.cpp reimplement it. Past one wave, threads take
  more elements and the result depends on the card (``wave`` below reproduces that).
- Each call advances the offset by 4 of its 32-bit outputs, one counter step, per
  four elements each thread covers: by exactly one for a tensor within one wave.

The arithmetic is float32 as cuRAND's (the 32-bit words are rounded to float32 before
the multiply, as C's conversions do); the GPU computes ``sin``/``cos`` with its fast
hardware ``__sincosf``, which NumPy cannot reproduce bit for bit, so results agree with
torch's to a few 1e-6 rather than exactly. A1111's "NV" generator does the Box-Muller in
float64 from the exact words and differs from this by up to about 1e-6 too.
"""

from __future__ import annotations

import numpy as np

#: Philox 4x32's multipliers and Weyl key increments (Random123).
PHILOX_M0, PHILOX_M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
PHILOX_W0, PHILOX_W1 = 0x9E3779B9, 0xBB67AE85
ROUNDS = 10
#: Threads per block in ATen's random kernels; one Philox block gives four normals.
BLOCK_THREADS = 256
PER_BLOCK = 4

_LOW = np.uint64(0xFFFFFFFF)
_32 = np.uint64(32)
#: cuRAND's float constants: 2^-32, and 2^-32 times float32 2 pi.
_INV_2POW32 = np.float32(2.3283064e-10)
_INV_2POW32_2PI = np.float32(_INV_2POW32 * np.float32(6.2831855))


def philox4x32(counter: np.ndarray, key: tuple[int, int], rounds: int = ROUNDS) -> np.ndarray:
    """Philox 4x32 of ``counter`` (4, n) uint32 words under ``key`` (two 32-bit words):
    the (4, n) uint32 outputs, every column at once."""
    c0, c1, c2, c3 = (np.asarray(word, dtype=np.uint32) for word in counter)
    for round_ in range(rounds):
        # the key is bumped by the Weyl increments before every round but the first
        k0 = np.uint32((key[0] + round_ * PHILOX_W0) & 0xFFFFFFFF)
        k1 = np.uint32((key[1] + round_ * PHILOX_W1) & 0xFFFFFFFF)
        product0 = c0.astype(np.uint64) * PHILOX_M0
        product1 = c2.astype(np.uint64) * PHILOX_M1
        c0, c1, c2, c3 = (
            (product1 >> _32).astype(np.uint32) ^ c1 ^ k0,
            (product1 & _LOW).astype(np.uint32),
            (product0 >> _32).astype(np.uint32) ^ c3 ^ k1,
            (product0 & _LOW).astype(np.uint32),
        )
    return np.stack([c0, c1, c2, c3])


def box_muller(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cuRAND's Box-Muller of two uint32 arrays: the float32 normals (r sin v, r cos v).
    ``u`` and ``v`` are one rounding each from the exact float64 value, as the GPU's
    fused multiply-add gives them; log, sin and cos are rounded from float64."""
    u = a.astype(np.float32).astype(np.float64) * float(_INV_2POW32) + float(_INV_2POW32) / 2
    v = b.astype(np.float32).astype(np.float64) * float(_INV_2POW32_2PI)
    u, v = u.astype(np.float32), (v + float(_INV_2POW32_2PI) / 2).astype(np.float32)
    radius = np.sqrt(np.float32(-2.0) * np.log(u.astype(np.float64)).astype(np.float32))
    sin = np.sin(v.astype(np.float64)).astype(np.float32)
    cos = np.cos(v.astype(np.float64)).astype(np.float32)
    return radius * sin, radius * cos


class TorchCudaGenerator:
    """A ``torch.Generator`` on a CUDA device after ``manual_seed(seed)``, for float32
    normals. ``wave``: the most threads the card runs in one launch (SM count times max
    threads per SM); None (A1111's and stable-diffusion.cpp's choice) takes every tensor
    to fit in one wave, as a latent does on all but the smallest cards. ``offset``: the
    counter step to start at [0, as after ``manual_seed``]."""

    def __init__(self, seed: int, wave: int | None = None, offset: int = 0):
        seed = int(seed) & (2**64 - 1)  # torch takes negative seeds modulo 2^64
        self._key = (seed & 0xFFFFFFFF, seed >> 32)
        #: the next call's counter step, as A1111's ``Generator.offset``; torch's Philox
        #: offset (``get_state``'s) counts 32-bit outputs, 4 times this
        self.offset = int(offset)
        if wave is not None and (wave < BLOCK_THREADS or wave % BLOCK_THREADS):
            raise ValueError(f"wave must be a positive multiple of {BLOCK_THREADS}, got {wave}")
        self.wave = wave

    def randn(self, shape: tuple[int, ...]) -> np.ndarray:
        """What ``torch.randn(shape, device="cuda", generator=g)`` returns next."""
        size = int(np.prod(shape))
        threads = -(-size // BLOCK_THREADS) * BLOCK_THREADS
        if self.wave is not None:
            threads = min(threads, self.wave)
        index = np.arange(size, dtype=np.uint64)
        span = np.uint64(threads * PER_BLOCK)  # elements one loop of all threads covers
        step = self.offset + index // span  # each loop is one more counter step
        component = (index % span) // np.uint64(threads)  # which of the block's 4 normals
        thread = index % np.uint64(threads)
        counter = [step & _LOW, step >> _32, thread & _LOW, thread >> _32]
        words = philox4x32([word.astype(np.uint32) for word in counter], self._key)
        self.offset += -(-size // int(span)) if size else 0
        if not component.any():  # within one wave: each element's first normal
            return box_muller(words[0], words[1])[0].reshape(shape)
        first = box_muller(words[0], words[1])
        second = box_muller(words[2], words[3])
        choices = [first[0], first[1], second[0], second[1]]
        return np.choose(component.astype(np.intp), choices).reshape(shape)


__all__ = ["TorchCudaGenerator", "box_muller", "philox4x32"]
