"""The library API with the tiny model: determinism, batching, sizes, callbacks."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from reference.old_text_path import encode_prompt

from sdgen.config import GenerationConfig
from sdgen.pipeline import initial_latents, timestep_embedding
from sdgen.samplers import DDIMSampler, sd_alphas_cumprod
from sdgen.text.tokenizer import VOCABULARY_PATH


def config(**kwargs):
    values = {"prompt": "a cat", "steps": 3, "width": 128, "height": 128, "seed": 1}
    return GenerationConfig(**{**values, **kwargs})


def test_pipeline_exposes_the_keras_cv_networks_and_tokenizer(tiny_pipeline):
    from sdgen.text.tokenizer import ClipTokenizer

    assert isinstance(tiny_pipeline.tokenizer, ClipTokenizer)
    assert tiny_pipeline.text_encoder.outputs[0].shape[1] == 77
    assert tuple(tiny_pipeline.diffusion_model.inputs[0].shape[1:]) == (16, 16, 4)
    assert tuple(tiny_pipeline.decoder.outputs[0].shape[1:]) == (128, 128, 3)
    layers = {type(layer).__name__ for layer in tiny_pipeline.diffusion_model.layers}
    assert {"ResBlock", "SpatialTransformer", "Upsample", "PaddedConv2D"} <= layers


@pytest.mark.fresh_load
def test_tiny_model_is_deterministic_across_loads(tiny_pipeline):
    from sdgen.pipeline import load_pipeline

    again = load_pipeline("tiny", width=128, height=128)
    for a, b in zip(
        tiny_pipeline.diffusion_model.get_weights(),
        again.diffusion_model.get_weights(),
        strict=True,
    ):
        assert np.array_equal(a, b)
    first = tiny_pipeline.generate(config())[0].pixels
    second = again.generate(config())[0].pixels
    assert np.array_equal(first, second)


def test_batch_sizes_give_identical_pixels(tiny_pipeline):
    reference = [i.pixels for i in tiny_pipeline.generate(config(num_images=3, batch_size=1))]
    for batch_size in (2, 3):
        images = tiny_pipeline.generate(config(num_images=3, batch_size=batch_size))
        assert [i.seed for i in images] == [1, 2, 3]
        for a, b in zip(reference, images, strict=True):
            assert np.array_equal(a, b.pixels)
    assert not np.array_equal(reference[0], reference[1])


def test_guidance_scale_one_skips_the_unconditional_pass_and_stays_batch_invariant(
    tiny_pipeline,
):
    alone = tiny_pipeline.generate(config(guidance_scale=1.0, seed=5))[0].pixels
    batched = tiny_pipeline.generate(config(guidance_scale=1.0, seed=4, num_images=2, batch_size=2))
    assert np.array_equal(alone, batched[1].pixels)
    guided = tiny_pipeline.generate(config(seed=5))[0].pixels
    assert not np.array_equal(alone, guided)


def test_other_sizes_reuse_the_weights(tiny_pipeline):
    image = tiny_pipeline.generate(config(width=192, height=64))[0].pixels
    assert image.shape == (64, 192, 3)
    assert image.std() > 1


@pytest.mark.parametrize("sampler", ["ddim", "euler", "euler-a", "dpmpp-2m", "dpmpp-2m-karras"])
def test_every_sampler_is_batch_invariant_and_seeded(tiny_pipeline, sampler):
    alone = tiny_pipeline.generate(config(sampler=sampler, seed=8, steps=4))[0]
    batch = tiny_pipeline.generate(
        config(sampler=sampler, seed=7, steps=4, num_images=3, batch_size=3)
    )
    assert alone.seed == batch[1].seed == 8
    assert np.array_equal(alone.pixels, batch[1].pixels)
    assert not np.array_equal(batch[0].pixels, batch[1].pixels)


def test_samplers_differ_and_accept_objects(tiny_pipeline):
    from sdgen.samplers import SAMPLERS, EulerAncestralSampler

    images = {
        name: tiny_pipeline.generate(config(sampler=name, steps=4))[0].pixels for name in SAMPLERS
    }
    assert not np.array_equal(images["ddim"], images["euler-a"])
    assert not np.array_equal(images["euler"], images["euler-a"])
    by_object = tiny_pipeline.generate(config(sampler=EulerAncestralSampler(), steps=4))
    assert np.array_equal(by_object[0].pixels, images["euler-a"])
    by_label = tiny_pipeline.generate(config(sampler="Euler a", steps=4))
    assert np.array_equal(by_label[0].pixels, images["euler-a"])


def test_step_callback_sees_every_step(tiny_pipeline):
    seen = []
    tiny_pipeline.generate(
        config(steps=4, num_images=2, batch_size=2),
        callback=lambda image, step, steps, latents: seen.append((image, step, steps)),
    )
    assert sorted(seen) == [(i, s, 4) for i in range(2) for s in range(4)]


def test_prompt_changes_the_image(tiny_pipeline):
    a = tiny_pipeline.generate(config(prompt="a cat"))[0].pixels
    b = tiny_pipeline.generate(config(prompt="a dog"))[0].pixels
    assert not np.array_equal(a, b)


def test_initial_latents_are_per_image_and_seeded():
    assert np.array_equal(initial_latents(3, 128, 64), initial_latents(3, 128, 64))
    assert initial_latents(3, 128, 64).shape == (16, 8, 4)
    assert not np.array_equal(initial_latents(3, 64, 64), initial_latents(4, 64, 64))


def test_timestep_embedding_matches_keras_cv():
    from keras_cv.models import StableDiffusion

    for timestep in (0, 1, 500, 999):
        reference = StableDiffusion.__new__(StableDiffusion)._get_timestep_embedding(timestep, 1)
        # keras_cv computes in float32, whose argument rounding reaches ~1e-4 at t=999
        assert np.allclose(timestep_embedding(timestep), np.asarray(reference)[0], atol=1e-3)


def test_schedule_and_timesteps_match_keras_cv():
    from keras_cv.src.models.stable_diffusion.constants import _ALPHAS_CUMPROD

    assert np.allclose(sd_alphas_cumprod(), _ALPHAS_CUMPROD, atol=1e-6)
    assert DDIMSampler().start(4).timesteps.tolist() == [999, 666, 333, 0]
    assert DDIMSampler().start(1).timesteps.tolist() == [0]


def test_bundled_vocabulary_is_openais_and_tokenizes_like_clip(tiny_pipeline):
    digest = hashlib.sha256(VOCABULARY_PATH.read_bytes()).hexdigest()
    assert digest == "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
    assert (VOCABULARY_PATH.parent / "bpe_simple_vocab_16e6.LICENSE.txt").is_file()
    ids = encode_prompt(tiny_pipeline.tokenizer, "a photograph of an astronaut")
    assert ids[0] == 49406 and ids.shape == (77,)
    assert ids[1:3].tolist() == [320, 8853]  # "a", "photograph"
    empty = encode_prompt(tiny_pipeline.tokenizer, "")
    from keras_cv.src.models.stable_diffusion.constants import _UNCONDITIONAL_TOKENS

    assert empty.tolist() == _UNCONDITIONAL_TOKENS


def test_seed_must_be_set_for_the_pipeline(tiny_pipeline):
    from sdgen.errors import ConfigError

    with pytest.raises(ConfigError, match="seed"):
        tiny_pipeline.generate(GenerationConfig("a cat", width=128, height=128))


def _with_unet_calls(tiny_pipeline, split_batch: bool):
    from sdgen.pipeline import DeviceSettings, Pipeline

    return Pipeline(
        tiny_pipeline.spec,
        tiny_pipeline.tokenizer,
        tiny_pipeline.text_encoder,
        tiny_pipeline.diffusion_model,
        tiny_pipeline.decoder,
        DeviceSettings(split_batch=split_batch),
    )


def _assert_within_one_level(a: np.ndarray, b: np.ndarray) -> None:
    """At most 1 level of 255 apart, in under 1% of the pixels."""
    apart = np.abs(a.astype(int) - b.astype(int))
    assert apart.max() <= 1 and (apart > 0).mean() < 0.01


@pytest.mark.parametrize("guidance", [7.5, 1.0])
def test_per_row_unet_calls_are_bit_identical_across_batch_sizes(tiny_pipeline, guidance):
    # every U-Net call sees one row, whatever the batch, so the kernels and their
    # summation order are the same for an image alone and inside a batch, on any CPU
    pipeline = _with_unet_calls(tiny_pipeline, split_batch=True)
    alone = pipeline.generate(config(seed=6, guidance_scale=guidance))[0].pixels
    batch = pipeline.generate(config(seed=5, num_images=2, batch_size=2, guidance_scale=guidance))
    assert np.array_equal(alone, batch[1].pixels)


@pytest.mark.parametrize("guidance", [7.5, 1.0])
def test_fused_unet_call_stays_within_one_level_across_batch_sizes(tiny_pipeline, guidance):
    # one call on all 2B rows: the math library may pick other kernels (another blocking,
    # another summation order) for another batch, as oneDNN does on AVX2 CPUs, so an image
    # may move by a level of 255 in a few pixels; bit-identical is not promised
    pipeline = _with_unet_calls(tiny_pipeline, split_batch=False)
    alone = pipeline.generate(config(seed=6, guidance_scale=guidance))[0].pixels
    batch = pipeline.generate(config(seed=5, num_images=2, batch_size=2, guidance_scale=guidance))
    _assert_within_one_level(alone, batch[1].pixels)
    # and it computes what the per-row calls compute, up to the same rounding
    per_row = _with_unet_calls(tiny_pipeline, split_batch=True)
    reference = per_row.generate(config(seed=6, guidance_scale=guidance))[0].pixels
    _assert_within_one_level(alone, reference)


def test_public_api_from_the_package():
    import sdgen

    assert sdgen.GenerationConfig is GenerationConfig
    assert callable(sdgen.load_pipeline) and "dpmpp-2m" in sdgen.SAMPLERS
    with pytest.raises(AttributeError):
        sdgen.nope  # noqa: B018


class _BrokenBackend:
    """Real tiny networks, except that the decoder returns ``image``."""

    def __init__(self, backend, image):
        self.backend, self.image = backend, image
        self.converted = []

    def encode(self, tokens, positions):
        return self.backend.encode(tokens, positions)

    def networks(self, signature):
        from sdgen.runtimes import Networks

        real = self.backend.networks(signature)
        shape = (1, signature.height, signature.width, 3)
        return Networks(signature, real.denoise, lambda latents: np.full(shape, self.image))


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.nan, "NaN or infinite values"),
        (np.inf, "NaN or infinite values"),
        (-1.0, "an all-black image"),
    ],
)
def test_broken_decodes_are_reported_not_returned(tiny_pipeline, image, message):
    from sdgen.errors import BadImageError
    from sdgen.pipeline import Pipeline

    broken = Pipeline.with_backend(
        tiny_pipeline.spec,
        tiny_pipeline.tokenizer,
        _BrokenBackend(tiny_pipeline.backend, np.float32(image)),
        tiny_pipeline.device,
    )
    with pytest.raises(BadImageError, match=message):
        broken.generate(config(steps=1))


def test_an_unknown_runtime_fails_before_any_weight_is_resolved(monkeypatch):
    from sdgen import weights
    from sdgen.errors import UsageError
    from sdgen.pipeline import load_pipeline

    def refuse(*args, **kwargs):
        raise AssertionError("weights were resolved for a runtime that does not exist")

    monkeypatch.setattr(weights, "resolve_weights", refuse)
    with pytest.raises(UsageError, match="unknown runtime 'onnx'"):
        load_pipeline("sd-v1.4", runtime="onnx")


def test_sizes_share_one_copy_of_the_weights_and_match_a_fresh_build(tiny_pipeline):
    from sdgen.families import family_of
    from sdgen.runtimes.signature import NetworkSignature

    backend = tiny_pipeline.backend
    signature = NetworkSignature(64, 192)
    unet, decoder = backend.diffusion_model_at(signature), backend.decoder_at(64, 192)
    assert tuple(unet.inputs[0].shape[1:]) == (8, 24, 4)
    assert tuple(decoder.outputs[0].shape[1:]) == (64, 192, 3)
    # the same variable objects, and none of their own
    for network, base in ((unet, backend.diffusion_model), (decoder, backend.decoder)):
        assert network is not base
        assert [id(v) for v in network.weights] == [id(v) for v in base.weights]

    rng = np.random.default_rng(0)
    latents = rng.standard_normal((1, 8, 24, 4)).astype(np.float32)
    family = family_of(tiny_pipeline.spec)
    t_emb = rng.standard_normal((1, family.timestep_embedding_dim)).astype(np.float32)
    context = rng.standard_normal((1, 77, 64)).astype(np.float32)
    fresh_unet = family.build("diffusion_model", tiny_pipeline.spec, 64, 192)
    fresh_unet.set_weights(backend.diffusion_model.get_weights())
    fresh_decoder = family.build("decoder", tiny_pipeline.spec, 64, 192)
    fresh_decoder.set_weights(backend.decoder.get_weights())
    shared = np.asarray(unet([latents, t_emb, context], training=False))
    assert np.array_equal(shared, np.asarray(fresh_unet([latents, t_emb, context], training=False)))
    assert np.abs(shared).max() > 0.1
    decoded = np.asarray(decoder(latents, training=False))
    assert np.array_equal(decoded, np.asarray(fresh_decoder(latents, training=False)))


def test_another_input_channel_count_is_refused(tiny_pipeline):
    from sdgen.errors import ModelError
    from sdgen.runtimes.signature import NetworkSignature

    with pytest.raises(ModelError, match="4 input channels, not 9"):
        tiny_pipeline.backend.networks(NetworkSignature(128, 128, in_channels=9))


class _Recording:
    """The real backend, recording (context length, rows) of every U-Net call."""

    def __init__(self, backend):
        self.backend, self.calls = backend, []

    def encode(self, tokens, positions):
        return self.backend.encode(tokens, positions)

    def networks(self, signature):
        from sdgen.runtimes import Networks

        real = self.backend.networks(signature)

        def denoise(latents, t_emb, contexts):
            assert contexts.shape[1] == signature.context_length
            self.calls.append((signature.context_length, len(latents)))
            return real.denoise(latents, t_emb, contexts)

        return Networks(signature, denoise, real.decode)


def test_conditioning_rows_of_different_lengths_call_the_unet_per_half(tiny_pipeline):
    from sdgen.pipeline import Pipeline
    from sdgen.text.conditioning import Conditioning

    backend = _Recording(tiny_pipeline.backend)
    pipeline = Pipeline.with_backend(
        tiny_pipeline.spec, tiny_pipeline.tokenizer, backend, tiny_pipeline.device
    )
    request = config(num_images=2, batch_size=2, steps=2)
    encoded = pipeline.encode(request.negative_prompt, request.prompt)
    assert (encoded.negative.shape, encoded.positive.shape) == ((1, 77, 64), (1, 77, 64))
    same = [i.pixels for i in pipeline.generate_iter(request, conditioning=encoded)]
    assert backend.calls == [(77, 4), (77, 4)]  # one call on 2B rows per step
    for image, expected in zip(same, tiny_pipeline.generate(request), strict=True):
        assert np.array_equal(image, expected.pixels)

    # the negative states twice over: attention over duplicated keys averages the same
    # values, so the image barely moves, but the halves need U-Nets of two lengths
    backend.calls.clear()
    doubled = Conditioning(np.concatenate([encoded.negative] * 2, axis=1), encoded.positive)
    longer = [i.pixels for i in pipeline.generate_iter(request, conditioning=doubled)]
    assert backend.calls == [(154, 2), (77, 2)] * 2
    for a, b in zip(longer, same, strict=True):
        _assert_within_one_level(a, b)


def test_conditioning_checks_its_shapes():
    from sdgen.errors import ConfigError
    from sdgen.text.conditioning import Conditioning

    states = np.zeros((1, 77, 64), np.float32)
    assert Conditioning(states, np.zeros((1, 154, 64), np.float32)).positive_length == 154
    with pytest.raises(ConfigError, match=r"\(1, L, C\)"):
        Conditioning(np.zeros((2, 77, 64), np.float32), states)
    with pytest.raises(ConfigError, match="differ in width: 32 and 64"):
        Conditioning(np.zeros((1, 77, 32), np.float32), states)


def test_fused_guided_step_equals_raw_predictions_combined_in_the_pipeline(tiny_pipeline):
    from sdgen.pipeline.guidance import combine
    from sdgen.runtimes.signature import NetworkSignature

    signature = NetworkSignature(128, 128)
    fused = _with_unet_calls(tiny_pipeline, split_batch=False).backend.networks(signature)
    per_row = tiny_pipeline.backend.networks(signature)
    assert fused.guided is not None and per_row.guided is None
    rng = np.random.default_rng(1)
    latents = np.repeat(rng.standard_normal((1, 16, 16, 4)).astype(np.float32), 2, 0)
    width = tiny_pipeline.family.timestep_embedding_dim
    t_emb = np.repeat(rng.standard_normal((1, width)).astype(np.float32), 2, 0)
    contexts = rng.standard_normal((2, 77, 64)).astype(np.float32)
    guided = fused.guided(latents, t_emb, contexts, np.float32(7.5))
    combined = combine(*np.split(fused.denoise(latents, t_emb, contexts), 2), 7.5)
    assert guided.shape == (1, 16, 16, 4)
    assert np.allclose(guided, combined, atol=1e-5)
    assert not np.allclose(guided, np.split(fused.denoise(latents, t_emb, contexts), 2)[1])


@pytest.mark.parametrize("sampler", ["ddim", "euler-a"])
def test_txt2img_latents_are_the_plain_loop_over_the_sampler_protocol(tiny_pipeline, sampler):
    """txt2img's final latents are what the sampler protocol's txt2img recipe gives
    (``SamplerRun``: unit noise times ``init_noise_sigma``, then scale, guided U-Net
    call and step, each step's fresh draw from the image's generator), written out
    here on the backend's networks: the image tasks' branches of the denoising loop
    (start latents, extra U-Net channels, the re-noised blend) leave it untouched."""
    from sdgen.noise import LatentNoise
    from sdgen.pipeline.guidance import combine
    from sdgen.runtimes.signature import NetworkSignature
    from sdgen.samplers import get_sampler

    cfg = config(sampler=sampler, steps=3, guidance_scale=7.5, negative_prompt="blurry")
    seen = []
    tiny_pipeline.generate(cfg, callback=lambda k, step, steps, x: seen.append(np.array(x)))

    conditioning = tiny_pipeline.encode(cfg.negative_prompt, cfg.prompt)
    networks = tiny_pipeline.backend.networks(NetworkSignature(128, 128))
    contexts = np.concatenate([conditioning.negative, conditioning.positive])
    run = get_sampler(sampler).start(3, tiny_pipeline.spec.prediction_type)
    generator = LatentNoise(cfg.rng, cfg.seed)
    x = generator.draw(128, 128)[None] * np.float32(run.init_noise_sigma)
    for index, timestep in enumerate(run.timesteps):
        model_input = np.repeat(run.scale_model_input(x, index), 2, 0)
        t_emb = timestep_embedding(timestep, tiny_pipeline.family.timestep_embedding_dim)
        output = networks.denoise(model_input, np.repeat(t_emb[None], 2, 0), contexts)
        noise = generator.draw(128, 128)[None] if run.needs_noise else None
        x = run.step(combine(*np.split(np.asarray(output), 2), 7.5), index, x, noise)

    assert len(seen) == 3
    assert np.abs(x[0]).max() > 0.1
    np.testing.assert_allclose(seen[-1], x[0], atol=1e-5)
