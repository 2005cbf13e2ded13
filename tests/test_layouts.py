"""sdgen's own network layers and layouts against keras_cv's, at tiny widths in seconds.

``sdgen.networks`` re-implements keras_cv's SD layers (keras_cv 0.9 is its last release
and keeps them in private modules). Built at the same widths and given the same weights,
each of sdgen's networks must list the same weights, layer for layer, as keras_cv's
layers laid out the same way (``reference/keras_cv_layouts.py``, with keras_cv's
departures from SD corrected), and compute the same outputs. At SD's own widths the
layer lists are compared with keras_cv's classes in
reference/test_tiny_conversion.py (a full-size check).
"""

from __future__ import annotations

import numpy as np
import pytest
from reference import keras_cv_layouts as keras_cv

from sdgen.networks import layouts
from sdgen.networks.layouts import Attention, Widths

WIDTHS = Widths(text=64, text_layers=2, unet=(32, 64, 64, 64), context=64, decoder=(64, 64, 32, 32))
SIZE = 64


def _same_weights(ours, theirs, seed):
    assert [tuple(w.shape) for w in ours.weights] == [tuple(w.shape) for w in theirs.weights]
    assert keras_cv.layer_names(ours) == keras_cv.layer_names(theirs)
    rng = np.random.default_rng(seed)
    values = [
        (rng.standard_normal(w.shape) / np.sqrt(max(1, np.prod(w.shape[:-1])))).astype(np.float32)
        for w in theirs.weights
    ]
    theirs.set_weights(values)
    ours.set_weights(values)


@pytest.mark.parametrize("v2", [False, True], ids=["sd1", "sd2"])
def test_text_encoder_matches_keras_cv(v2):
    ours = layouts.text_encoder(WIDTHS, 2, "gelu" if v2 else "quick_gelu")
    theirs = keras_cv.text_encoder(WIDTHS, 2, v2=v2)
    _same_weights(ours, theirs, 1)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 49408, (2, 77)).astype(np.int32)
    positions = np.tile(np.arange(77, dtype=np.int32), (2, 1))
    expected = theirs.predict_on_batch([tokens, positions])
    assert np.abs(expected).max() > 0.1
    np.testing.assert_array_equal(ours.predict_on_batch([tokens, positions]), expected)


@pytest.mark.parametrize("v2", [False, True], ids=["sd1", "sd2"])
def test_diffusion_model_matches_keras_cv(v2):
    ours = layouts.diffusion_model(WIDTHS, Attention(heads=2, fully_connected=v2), SIZE, SIZE)
    theirs = keras_cv.diffusion_model(WIDTHS, 2, SIZE, fully_connected=v2)
    _same_weights(ours, theirs, 2)
    rng = np.random.default_rng(0)
    inputs = [
        rng.standard_normal((2, SIZE // 8, SIZE // 8, 4)).astype(np.float32),
        rng.standard_normal((2, WIDTHS.unet[0])).astype(np.float32),
        rng.standard_normal((2, 77, WIDTHS.context)).astype(np.float32),
    ]
    expected = theirs.predict_on_batch(inputs)
    assert np.abs(expected).max() > 0.1
    np.testing.assert_array_equal(ours.predict_on_batch(inputs), expected)


def test_decoder_matches_keras_cv():
    ours = layouts.decoder(WIDTHS, SIZE, SIZE)
    theirs = keras_cv.decoder(WIDTHS, SIZE)
    _same_weights(ours, theirs, 3)
    latent = np.random.default_rng(0).standard_normal((1, SIZE // 8, SIZE // 8, 4))
    latent = latent.astype(np.float32)
    expected = theirs.predict_on_batch(latent)
    assert np.abs(expected).max() > 0.1
    np.testing.assert_array_equal(ours.predict_on_batch(latent), expected)


def test_encoder_matches_keras_cv():
    ours = layouts.encoder(WIDTHS, SIZE, SIZE)
    theirs = keras_cv.encoder(WIDTHS, SIZE)
    _same_weights(ours, theirs, 4)
    image = np.random.default_rng(0).uniform(-1, 1, (1, SIZE, SIZE, 3)).astype(np.float32)
    expected = theirs.predict_on_batch(image)
    assert expected.shape == (1, SIZE // 8, SIZE // 8, 4)
    assert np.abs(expected).max() > 0.1
    np.testing.assert_array_equal(ours.predict_on_batch(image), expected)


def test_tiny_encoder_is_the_same_in_every_build_and_follows_the_seed():
    """tiny's encoder is filled from seed + 3: every build (every process) gets the same
    weights, so an encoded image is a function of the image alone."""
    from sdgen.catalog import get_model_spec
    from sdgen.families import family_of

    spec = get_model_spec("tiny")
    image = np.random.default_rng(1).uniform(-1, 1, (1, SIZE, SIZE, 3)).astype(np.float32)
    first, second = (family_of(spec).build("encoder", spec, SIZE, SIZE) for _ in range(2))
    latents = first.predict_on_batch(image)
    assert latents.shape == (1, SIZE // 8, SIZE // 8, 4) and latents.std() > 0.01
    np.testing.assert_array_equal(second.predict_on_batch(image), latents)
    import dataclasses

    other = dataclasses.replace(spec, seed=spec.seed + 1)
    shifted = family_of(other).build("encoder", other, SIZE, SIZE)
    assert not np.array_equal(shifted.predict_on_batch(image), latents)


def test_diffusion_model_takes_other_context_lengths_and_input_channels():
    """Long prompts give a longer context; inpainting models take 9 input channels."""
    model = layouts.diffusion_model(WIDTHS, Attention(heads=2), SIZE, SIZE, 154, 9)
    rng = np.random.default_rng(0)
    out = model.predict_on_batch(
        [
            rng.standard_normal((1, SIZE // 8, SIZE // 8, 9)).astype(np.float32),
            rng.standard_normal((1, WIDTHS.unet[0])).astype(np.float32),
            rng.standard_normal((1, 154, WIDTHS.context)).astype(np.float32),
        ]
    )
    assert out.shape == (1, SIZE // 8, SIZE // 8, 4)
