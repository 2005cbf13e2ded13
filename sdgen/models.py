"""Build keras_cv's Stable Diffusion networks, full size or tiny, for a given image size.

Full-size models use keras_cv's own classes (``TextEncoder``/``TextEncoderV2``,
``DiffusionModel``/``DiffusionModelV2``, ``Decoder``) and never let them download
anything: weights are loaded by the caller from files resolved by :mod:`sdgen.weights`.
The ``tiny`` family is a small network with the same topology, built from keras_cv's
layer classes and filled deterministically from a seed, so it runs the real pipeline in
seconds without any download.

All networks share keras_cv's calling convention:

- text encoder: ``[tokens (B, 77) int32, positions (B, 77) int32] -> (B, 77, C)``
- diffusion model: ``[latent (B, H/8, W/8, 4), timestep_embedding (B, 320),
  context (B, 77, C)] -> (B, H/8, W/8, 4)``
- decoder: ``latent (B, H/8, W/8, 4) -> image (B, H, W, 3)`` in [-1, 1]
"""

from __future__ import annotations

import functools

import numpy as np

from .errors import ModelError
from .spec import ModelSpec

#: CLIP's context length; prompts are padded to it.
MAX_PROMPT_LENGTH = 77
#: CLIP's vocabulary size (49,152 BPE merges + bytes + 2 special tokens).
VOCAB_SIZE = 49408
#: Width of the sinusoidal timestep embedding the U-Net takes.
TIMESTEP_EMBEDDING_DIM = 320

# Widths of the tiny model. GroupNormalization uses 32 groups, so every width that goes
# through one is a multiple of 32.
_TINY_TEXT_WIDTH = 64
_TINY_TEXT_HEADS = 2
_TINY_TEXT_LAYERS = 2
_TINY_UNET_CHANNELS = (32, 64)
_TINY_UNET_HEADS = 2
_TINY_TIME_WIDTH = 128
_TINY_DECODER_CHANNELS = (64, 32, 32)


def _keras():
    import keras

    return keras


#: Keras' random initialisers (the others, such as zeros and ones, cost nothing).
_RANDOM_INITIALISERS = (
    "VarianceScaling",  # and the Glorot, He and LeCun ones built on it
    "RandomNormal",
    "RandomUniform",
    "TruncatedNormal",
    "Orthogonal",
)


def _placeholder_weights(build):
    """Build with every randomly initialised weight set to zeros instead: each builder's
    caller overwrites all weights (loaded from files, or filled from a seed), and drawing
    860 million random numbers took 3 s of the SD U-Net's 11-s build on 2 cores."""

    @functools.wraps(build)
    def wrapper(*args, **kwargs):
        keras = _keras()
        classes = [getattr(keras.initializers, name) for name in _RANDOM_INITIALISERS]
        saved = [cls.__dict__["__call__"] for cls in classes]

        def zeros(_self, shape, dtype=None):
            return keras.ops.zeros(shape, dtype=dtype or keras.config.floatx())

        try:
            for cls in classes:
                cls.__call__ = zeros
            return build(*args, **kwargs)
        finally:
            for cls, call in zip(classes, saved, strict=True):
                cls.__call__ = call

    return wrapper


@_placeholder_weights
def build_text_encoder(spec: ModelSpec):
    """The text encoder of ``spec``'s family. Its weights are placeholders (zeros) for
    the caller to load, except the tiny model's, which are filled from its seed."""
    if spec.family == "sd-v1":
        from keras_cv.models.stable_diffusion import TextEncoder

        return TextEncoder(MAX_PROMPT_LENGTH, download_weights=False)
    if spec.family == "sd-v2":
        from keras_cv.models.stable_diffusion import TextEncoderV2

        return match_stable_diffusion(TextEncoderV2(MAX_PROMPT_LENGTH, download_weights=False))
    if spec.family == "tiny":
        model = _tiny_text_encoder()
        _fill_deterministically(model, spec.seed)
        return model
    raise ModelError(f"model {spec.name!r} has an unknown family {spec.family!r}")


@_placeholder_weights
def build_diffusion_model(spec: ModelSpec, height: int, width: int):
    """The U-Net of ``spec``'s family for ``height`` x ``width`` pixel images (weights
    as for ``build_text_encoder``)."""
    if spec.family == "sd-v1":
        from keras_cv.models.stable_diffusion import DiffusionModel

        model = DiffusionModel(height, width, MAX_PROMPT_LENGTH, download_weights=False)
        return match_stable_diffusion(model)
    if spec.family == "sd-v2":
        # keras_cv defines DiffusionModelV2 but does not export it
        from keras_cv.src.models.stable_diffusion.diffusion_model import DiffusionModelV2

        model = DiffusionModelV2(height, width, MAX_PROMPT_LENGTH, download_weights=False)
        return match_stable_diffusion(model)
    if spec.family == "tiny":
        model = match_stable_diffusion(_tiny_diffusion_model(height, width))
        _fill_deterministically(model, spec.seed + 1)
        return model
    raise ModelError(f"model {spec.name!r} has an unknown family {spec.family!r}")


@_placeholder_weights
def build_decoder(spec: ModelSpec, height: int, width: int):
    """The VAE decoder of ``spec``'s family for ``height`` x ``width`` pixel images
    (weights as for ``build_text_encoder``)."""
    if spec.family in ("sd-v1", "sd-v2"):
        from keras_cv.models.stable_diffusion import Decoder

        return match_stable_diffusion(Decoder(height, width, download_weights=False))
    if spec.family == "tiny":
        model = match_stable_diffusion(_tiny_decoder(height, width))
        _fill_deterministically(model, spec.seed + 2)
        return model
    raise ModelError(f"model {spec.name!r} has an unknown family {spec.family!r}")


BUILDERS = {
    "text_encoder": lambda spec, height, width: build_text_encoder(spec),
    "diffusion_model": build_diffusion_model,
    "decoder": build_decoder,
}


#: The epsilon of Stable Diffusion's GroupNorms in its VAE and in the U-Net's transformer
#: blocks (the U-Net's residual blocks use keras_cv's 1e-5, as SD does).
_SD_NORM_EPSILON = 1e-6


def match_stable_diffusion(network):
    """Make keras_cv's network compute what Stable Diffusion computes, and return it.

    keras_cv departs from SD (the CompVis code its weights come from, and diffusers) in
    ways that have nothing to do with weights: its GEGLU uses the tanh approximation of
    GELU where SD uses the exact one, ``TextEncoderV2`` uses ``keras.ops.gelu``'s tanh
    approximation where OpenCLIP uses the exact one, and its GroupNorms use epsilon 1e-5
    where SD's VAE and transformer blocks use 1e-6. These moved the U-Net's output by
    3.5e-4 and SD 2's text states by 1.1e-3 against diffusers; after this they agree
    within 1e-5 (tests/reference/test_checkpoints_vs_diffusers.py). The layers are
    changed in place; their weights are untouched.
    """
    from keras_cv.src.models.stable_diffusion.diffusion_model import GEGLU, SpatialTransformer
    from keras_cv.src.models.stable_diffusion.text_encoder import CLIPEncoderLayer

    keras = _keras()
    layers = list(network._flatten_layers(include_self=False))
    is_unet = any(isinstance(layer, SpatialTransformer) for layer in layers)
    for layer in layers:
        if isinstance(layer, GEGLU):
            layer.__class__ = _exact_geglu_class()
        elif isinstance(layer, SpatialTransformer):
            layer.norm.epsilon = _SD_NORM_EPSILON
        elif not is_unet and isinstance(layer, keras.layers.GroupNormalization):
            layer.epsilon = _SD_NORM_EPSILON  # the VAE's
        elif isinstance(layer, CLIPEncoderLayer) and layer.activation is keras.ops.gelu:
            layer.activation = _exact_gelu
    return network


def _exact_gelu(x):
    return _keras().ops.gelu(x, approximate=False)


@functools.cache
def _exact_geglu_class():
    from keras_cv.src.models.stable_diffusion.diffusion_model import GEGLU

    class ExactGEGLU(GEGLU):
        """keras_cv's GEGLU with the exact GELU gate SD uses."""

        def call(self, inputs):
            x = self.dense(inputs)
            value, gate = x[..., : self.output_dim], x[..., self.output_dim :]
            return value * _exact_gelu(gate)

    return ExactGEGLU


def latent_size(model) -> tuple[int, int]:
    """The (height, width) in pixels that a diffusion model or decoder was built for."""
    shape = model.inputs[0].shape
    return int(shape[1]) * 8, int(shape[2]) * 8


# -- the tiny family ----------------------------------------------------------------------


def _tiny_text_encoder():
    keras = _keras()
    from keras_cv.src.models.stable_diffusion.text_encoder import (
        CLIPEmbedding,
        CLIPEncoderLayer,
        quick_gelu,
    )

    tokens = keras.layers.Input((MAX_PROMPT_LENGTH,), dtype="int32", name="tokens")
    positions = keras.layers.Input((MAX_PROMPT_LENGTH,), dtype="int32", name="positions")
    x = CLIPEmbedding(VOCAB_SIZE, _TINY_TEXT_WIDTH, MAX_PROMPT_LENGTH)([tokens, positions])
    for _ in range(_TINY_TEXT_LAYERS):
        x = CLIPEncoderLayer(_TINY_TEXT_WIDTH, _TINY_TEXT_HEADS, activation=quick_gelu)(x)
    x = keras.layers.LayerNormalization(epsilon=1e-5)(x)
    return keras.Model([tokens, positions], x, name="tiny_text_encoder")


def _tiny_diffusion_model(height: int, width: int):
    """A two-level U-Net laid out like keras_cv's ``DiffusionModel``."""
    keras = _keras()
    from keras_cv.src.models.stable_diffusion.diffusion_model import (
        ResBlock,
        SpatialTransformer,
        Upsample,
    )
    from keras_cv.src.models.stable_diffusion.padded_conv2d import PaddedConv2D

    context = keras.layers.Input((MAX_PROMPT_LENGTH, _TINY_TEXT_WIDTH), name="context")
    t_input = keras.layers.Input((TIMESTEP_EMBEDDING_DIM,), name="timestep_embedding")
    latent = keras.layers.Input((height // 8, width // 8, 4), name="latent")

    t_emb = keras.layers.Dense(_TINY_TIME_WIDTH)(t_input)
    t_emb = keras.layers.Activation("swish")(t_emb)
    t_emb = keras.layers.Dense(_TINY_TIME_WIDTH)(t_emb)

    def transformer(channels):
        return SpatialTransformer(_TINY_UNET_HEADS, channels // _TINY_UNET_HEADS)

    low, high = _TINY_UNET_CHANNELS
    skips = []
    x = PaddedConv2D(low, 3, padding=1)(latent)
    skips.append(x)
    x = ResBlock(low)([x, t_emb])
    x = transformer(low)([x, context])
    skips.append(x)
    x = PaddedConv2D(low, 3, strides=2, padding=1)(x)
    skips.append(x)
    x = ResBlock(high)([x, t_emb])
    x = transformer(high)([x, context])
    skips.append(x)

    x = ResBlock(high)([x, t_emb])
    x = transformer(high)([x, context])
    x = ResBlock(high)([x, t_emb])

    for _ in range(2):
        x = keras.layers.Concatenate()([x, skips.pop()])
        x = ResBlock(high)([x, t_emb])
        x = transformer(high)([x, context])
    x = Upsample(high)(x)
    for _ in range(2):
        x = keras.layers.Concatenate()([x, skips.pop()])
        x = ResBlock(low)([x, t_emb])
        x = transformer(low)([x, context])

    x = keras.layers.GroupNormalization(epsilon=1e-5)(x)
    x = keras.layers.Activation("swish")(x)
    output = PaddedConv2D(4, 3, padding=1)(x)
    return keras.Model([latent, t_input, context], output, name="tiny_diffusion_model")


def _tiny_decoder(height: int, width: int):
    """A VAE decoder laid out like keras_cv's ``Decoder``: three 2x upsamplings."""
    keras = _keras()
    from keras_cv.src.models.stable_diffusion.attention_block import AttentionBlock
    from keras_cv.src.models.stable_diffusion.padded_conv2d import PaddedConv2D
    from keras_cv.src.models.stable_diffusion.resnet_block import ResnetBlock

    first = _TINY_DECODER_CHANNELS[0]
    layers = [
        keras.layers.Input((height // 8, width // 8, 4)),
        keras.layers.Rescaling(1.0 / 0.18215),
        PaddedConv2D(4, 1),
        PaddedConv2D(first, 3, padding=1),
        ResnetBlock(first),
        AttentionBlock(first),
        ResnetBlock(first),
    ]
    for channels in _TINY_DECODER_CHANNELS:
        layers += [
            keras.layers.UpSampling2D(2),
            PaddedConv2D(channels, 3, padding=1),
            ResnetBlock(channels),
        ]
    layers += [
        keras.layers.GroupNormalization(epsilon=1e-5),
        keras.layers.Activation("swish"),
        PaddedConv2D(3, 3, padding=1),
    ]
    return keras.Sequential(layers, name="tiny_decoder")


def _fill_deterministically(model, seed: int) -> None:
    """Overwrite every weight of ``model`` from a NumPy generator seeded with ``seed``.

    Keras initialisers draw from a global seed generator; filling the weights ourselves
    makes the tiny model identical in every process. Kernels get a fan-in scaled normal
    (He-style, so activations keep their scale through the layers), normalisation scales
    get ones, and biases and offsets small normals so the output is not trivially
    symmetric.
    """
    rng = np.random.default_rng(seed)
    values = []
    for weight in model.weights:
        shape = tuple(weight.shape)
        name = weight.path
        if name.endswith(("gamma", "scale")):
            values.append(np.ones(shape, np.float32))
        elif name.endswith(("beta", "bias", "embeddings")) or len(shape) == 1:
            values.append((0.02 * rng.standard_normal(shape)).astype(np.float32))
        else:
            fan_in = int(np.prod(shape[:-1]))
            std = 1.0 / np.sqrt(fan_in)
            values.append((std * rng.standard_normal(shape)).astype(np.float32))
    model.set_weights(values)


# -- weight files ---------------------------------------------------------------------------


def load_weights(model, path) -> None:
    """Load a keras_cv weights file into ``model``.

    keras_cv publishes its weights in the legacy Keras HDF5 layout, which Keras 3 reads
    back layer by layer in order; a file for another architecture fails here, with the
    file named in the error.
    """
    from .errors import WeightsError

    try:
        model.load_weights(str(path))
    except Exception as error:  # h5py, ValueError for shape mismatches, ...
        raise WeightsError(f"could not load weights from {path}: {error}") from error


def save_legacy_weights(model, path) -> None:
    """Write ``model``'s weights in the legacy HDF5 layout keras_cv's published files use.

    Used to make test fixtures and to export a model in the ``--weights DIR`` layout.
    """
    import h5py
    from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group

    with h5py.File(path, "w") as handle:
        save_weights_to_hdf5_group(handle, model)
