"""Token weights applied to the encoded text states, as A1111's emphasis modes apply them.

- **original** (A1111's default): each chunk's states are multiplied per token by their
  weights, then scaled so that the chunk's mean is what it was before, which keeps the
  overall magnitude the U-Net was trained on (``sd_emphasis.py``'s "Original").
- **no-norm**: multiplied, not rescaled.
- **ignore** and **off**: no weights (the chunker gave every token weight 1).

A chunk whose weights are all 1 is returned untouched, so a prompt without brackets is
encoded bit for bit as before.
"""

from __future__ import annotations

import numpy as np


def weigh(states: np.ndarray, weights: np.ndarray, emphasis: str) -> np.ndarray:
    """``states`` (k, 77, C) of one prompt's k chunks, weighted by ``weights`` (k, 77)."""
    if emphasis not in ("original", "no-norm"):
        return states
    states = np.array(states, dtype=np.float32, copy=True)
    for row, (chunk, chunk_weights) in enumerate(zip(states, weights, strict=True)):
        if np.all(chunk_weights == 1.0):
            continue
        weighted = chunk * chunk_weights[:, None].astype(np.float32)
        if emphasis == "original":
            weighted = weighted * (chunk.mean() / weighted.mean())
        states[row] = weighted
    return states


__all__ = ["weigh"]
