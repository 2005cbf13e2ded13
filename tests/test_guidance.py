"""Classifier-free guidance with a prompt and a negative prompt of different lengths.

Where the runtime fuses the guidance into one call (TensorFlow with ``split_batch`` off,
the GPU default), ``sdgen.pipeline.guidance`` repeats both contexts to their least
common multiple and makes one call; elsewhere each row runs on the U-Net of its own
length. These tests prove with the tiny model that the repetition changes nothing (a
context tiled r times gives the U-Net's output for the context itself), that the fused
tiled prediction equals the per-row one, and check with a stand-in U-Net which calls
each case makes.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from sdgen.pipeline import DeviceSettings, Pipeline
from sdgen.pipeline.guidance import common_length, predict_noise, repeat_context
from sdgen.pipeline.stages import timestep_embedding
from sdgen.runtimes.base import Networks
from sdgen.runtimes.signature import NetworkSignature
from sdgen.text.conditioning import Conditioning

SIZE = 64  # pixels: 8x8 latents keep the tiny U-Net's calls quick
SCALE = 7.5
#: float32 rounding of attention sums over 2-4x as many keys, against outputs near 1.8
TOLERANCE = 1e-5
#: 150 one-token words and no comma: exactly two chunks
LONG_PROMPT = " ".join(["red", "house", "on", "a", "green", "hill"] * 25)


def _latents(batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    latents = rng.standard_normal((batch, SIZE // 8, SIZE // 8, 4)).astype(np.float32)
    t_emb = np.repeat(timestep_embedding(601.0, 32)[None], batch, 0)
    return latents, t_emb


def _at(backend):
    return lambda length: backend.networks(NetworkSignature(SIZE, SIZE, length))


@pytest.fixture(scope="module")
def fused(tiny_pipeline) -> Pipeline:
    """The tiny networks (the same layers and weights) on the fused path GPUs take."""
    p = tiny_pipeline
    device = DeviceSettings(split_batch=False)
    return Pipeline(p.spec, p.tokenizer, p.text_encoder, p.diffusion_model, p.decoder, device)


@pytest.fixture(scope="module")
def per_row(tiny_pipeline) -> Pipeline:
    """The same networks on the CPU's path: one U-Net call per row, no fused call."""
    p = tiny_pipeline
    device = DeviceSettings(split_batch=True)
    return Pipeline(p.spec, p.tokenizer, p.text_encoder, p.diffusion_model, p.decoder, device)


@pytest.mark.slow
def test_a_context_tiled_r_times_gives_the_unet_output_of_the_context_itself(per_row):
    context = per_row.encode("", "a lighthouse on a cliff at dusk").positive
    latents, t_emb = _latents(1)
    networks = _at(per_row.backend)
    alone = networks(77).denoise(latents, t_emb, context)
    assert np.abs(alone).max() > 0.5  # a working network's output
    for repeats in (2, 4):
        length = 77 * repeats
        tiled = networks(length).denoise(latents, t_emb, repeat_context(context, length))
        assert tiled.shape == alone.shape
        np.testing.assert_allclose(tiled, alone, rtol=0, atol=TOLERANCE, err_msg=f"r={repeats}")
    # the check can fail: another context of the same length moves the output
    other = per_row.encode("", "a bowl of soup").positive
    moved = networks(77).denoise(latents, t_emb, other)
    assert np.abs(moved - alone).max() > 100 * TOLERANCE


@pytest.mark.slow
def test_fused_tiled_guidance_of_154_and_77_tokens_equals_the_per_row_prediction(fused, per_row):
    conditioning = per_row.encode("", LONG_PROMPT)
    assert (conditioning.negative_length, conditioning.positive_length) == (77, 154)
    latents, t_emb = _latents(2)

    calls = []

    def spied(length):
        network = _at(fused.backend)(length)

        def guided(latents, t_emb, contexts, scale):
            calls.append((length, contexts.shape))
            return network.guided(latents, t_emb, contexts, scale)

        return replace(network, guided=guided)

    got = predict_noise(spied, latents, t_emb, conditioning, SCALE)
    assert calls == [(154, (4, 154, conditioning.width))]  # one fused call, 2B rows

    expected = predict_noise(_at(per_row.backend), latents, t_emb, conditioning, SCALE)
    assert got.shape == expected.shape == latents.shape
    assert np.abs(expected).max() > 0.5
    # the guidance scale multiplies the rows' small differences: compare at its scale
    np.testing.assert_allclose(got, expected, rtol=0, atol=SCALE * TOLERANCE)


# --- which calls each case makes, with a stand-in U-Net ------------------------------


class FakeNetworks:
    """A U-Net stand-in whose output depends on the context only through its mean over
    the tokens (so tiling cannot change it), recording every call."""

    def __init__(self, fused: bool):
        self.fused = fused
        self.calls: list[tuple[str, int, int]] = []  # (kind, context length, rows)

    def _unet(self, latents, contexts):
        return latents * contexts.mean(axis=(1, 2))[:, None, None, None]

    def __call__(self, length: int) -> Networks:
        def denoise(latents, t_emb, contexts):
            assert contexts.shape[1] == length
            self.calls.append(("denoise", length, len(latents)))
            return self._unet(latents, contexts)

        def guided(latents, t_emb, contexts, scale):
            assert contexts.shape[1] == length
            self.calls.append(("guided", length, len(latents)))
            u, c = np.split(self._unet(latents, contexts), 2)
            return u + scale * (c - u)

        signature = NetworkSignature(SIZE, SIZE, length)
        return Networks(signature, denoise, lambda x: x, guided if self.fused else None)


def _conditioning(negative_chunks: int, positive_chunks: int) -> Conditioning:
    rng = np.random.default_rng(negative_chunks * 10 + positive_chunks)
    return Conditioning(
        negative=rng.standard_normal((1, 77 * negative_chunks, 8)).astype(np.float32),
        positive=rng.standard_normal((1, 77 * positive_chunks, 8)).astype(np.float32),
    )


@pytest.mark.parametrize(
    ("chunks", "fused_length"),
    [
        ((1, 2), 154),
        ((2, 1), 154),
        ((1, 4), 308),
        ((2, 3), 462),
        ((3, 4), 924),
        ((1, 5), None),
        ((2, 5), None),
    ],
)
def test_different_lengths_fuse_only_within_four_times_the_shorter(chunks, fused_length):
    conditioning = _conditioning(*chunks)
    latents, t_emb = _latents(3)
    lengths = [77 * n for n in chunks]
    assert common_length(*lengths) == fused_length

    fake = FakeNetworks(fused=True)
    got = predict_noise(fake, latents, t_emb, conditioning, SCALE)
    if fused_length is None:
        assert fake.calls == [("denoise", lengths[0], 3), ("denoise", lengths[1], 3)]
    else:
        assert fake.calls == [("guided", fused_length, 6)]

    per_row = FakeNetworks(fused=False)
    expected = predict_noise(per_row, latents, t_emb, conditioning, SCALE)
    assert per_row.calls == [("denoise", lengths[0], 3), ("denoise", lengths[1], 3)]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_equal_lengths_and_no_guidance_call_as_before():
    latents, t_emb = _latents(2)
    fake = FakeNetworks(fused=True)
    predict_noise(fake, latents, t_emb, _conditioning(2, 2), SCALE)
    assert fake.calls == [("guided", 154, 4)]
    fake = FakeNetworks(fused=False)
    predict_noise(fake, latents, t_emb, _conditioning(2, 2), SCALE)
    assert fake.calls == [("denoise", 154, 4)]
    fake = FakeNetworks(fused=True)
    predict_noise(fake, latents, t_emb, _conditioning(1, 2), None)  # scale 1: no negative
    assert fake.calls == [("denoise", 154, 2)]


def test_repeat_context_tiles_along_the_token_axis():
    states = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)
    tiled = repeat_context(states, 9)
    assert tiled.shape == (2, 9, 2)
    for k in range(3):
        np.testing.assert_array_equal(tiled[:, 3 * k : 3 * k + 3], states)
