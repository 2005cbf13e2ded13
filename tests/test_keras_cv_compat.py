"""sdgen's DDIM against keras_cv's own ``text_to_image`` loop on full-size networks.

Both get the same random full-size SD v1 networks (injected into keras_cv's
``StableDiffusion``), the same prompt, initial noise, steps and guidance; the images must
agree within 1 in 255 per pixel.
"""

from __future__ import annotations

import numpy as np
import pytest
from full_size import full_size_networks

from sdgen.catalog import get_model_spec
from sdgen.config import GenerationConfig
from sdgen.pipeline import Pipeline, initial_latents
from sdgen.text.tokenizer import load_tokenizer

SIZE = 128

# the module's fixture is built once, in one test process
pytestmark = pytest.mark.xdist_group("full-size-networks")


@pytest.fixture(scope="module")
def networks():
    return full_size_networks(SIZE, SIZE)


class RecordingDecoder:
    """Stands in for keras_cv's decoder to keep the final latents it is given."""

    def __init__(self, decoder):
        self.decoder = decoder
        self.latents = None

    def predict_on_batch(self, latents):
        self.latents = np.asarray(latents)
        return self.decoder.predict_on_batch(latents)


def keras_cv_model(networks):
    from keras_cv.models import StableDiffusion

    model = StableDiffusion(img_height=SIZE, img_width=SIZE, jit_compile=False)
    text_encoder, diffusion_model, decoder = networks
    model._text_encoder, model._diffusion_model = text_encoder, diffusion_model
    model._decoder = RecordingDecoder(decoder)
    model._tokenizer = load_tokenizer()
    return model


@pytest.mark.slow
@pytest.mark.full_size
@pytest.mark.parametrize(
    ("steps", "guidance", "negative"), [(3, 7.5, None), (2, 4.0, "blurry, dark")]
)
def test_ddim_reproduces_keras_cv_text_to_image(networks, steps, guidance, negative):
    prompt = "photograph of an astronaut riding a horse"
    reference_model = keras_cv_model(networks)
    noise = initial_latents(1234, SIZE, SIZE)[None]
    encoded = reference_model.encode_text(prompt)
    reference = reference_model.generate_image(
        encoded,
        negative_prompt=negative,
        num_steps=steps,
        unconditional_guidance_scale=guidance,
        diffusion_noise=noise,
    )[0]

    pipeline = Pipeline(get_model_spec("sd-v1.4"), load_tokenizer(), *networks)
    config = GenerationConfig(
        prompt,
        negative_prompt=negative or "",
        steps=steps,
        guidance_scale=guidance,
        width=SIZE,
        height=SIZE,
        seed=1234,
        sampler="ddim",
    )
    latents = {}
    ours = pipeline.generate(config, callback=lambda k, i, n, x: latents.update({i: x}))[0].pixels

    final = latents[steps - 1]
    reference_latents = reference_model._decoder.latents[0]
    scale = np.abs(reference_latents).max()
    assert np.abs(final - reference_latents).max() <= 1e-4 * max(scale, 1.0)

    # the comparison means something only if the image is not saturated or flat
    assert np.mean((reference > 0) & (reference < 255)) > 0.2 and reference.std() > 10
    difference = np.abs(ours.astype(int) - reference.astype(int))
    assert difference.max() <= 1, f"max pixel difference {difference.max()} of 255"


@pytest.mark.slow
@pytest.mark.full_size
def test_a_long_weighted_prompt_with_a_negative_embedding_on_full_size_networks(networks, tmp_path):
    """Issue 12's "done when" at full size: SD 1.x's networks (random weights) take a
    prompt of three chunks with weights and BREAK, a negative prompt with a 768-wide
    embedding in it, and clip skip 2, and draw an image from them."""
    from conftest import LONG_PROMPT, write_embedding

    from sdgen.adapters.textual_inversion import EmbeddingLibrary
    from sdgen.text.conditioning import TextOptions

    pipeline = Pipeline(get_model_spec("sd-v1.4"), load_tokenizer(), *networks)
    write_embedding(tmp_path, "EasyNegative", 2, width=768)
    negative = "EasyNegative, (lowres:1.2), jpeg artifacts"
    options = TextOptions(clip_skip=2)
    without = pipeline.encode(negative, LONG_PROMPT, options)  # no embeddings folder
    pipeline.embeddings = EmbeddingLibrary(tmp_path)
    encoded = pipeline.encode(negative, LONG_PROMPT, options)
    assert encoded.positive.shape == (1, 3 * 77, 768)
    assert encoded.negative.shape == (1, 77, 768)
    assert np.array_equal(encoded.positive, without.positive)
    assert not np.allclose(encoded.negative, without.negative)  # the vectors went in
    config = GenerationConfig(
        prompt=LONG_PROMPT,
        negative_prompt=negative,
        steps=2,
        width=SIZE,
        height=SIZE,
        seed=3,
        clip_skip=2,
    )
    [image] = pipeline.generate(config)
    assert image.pixels.shape == (SIZE, SIZE, 3) and image.pixels.std() > 1
