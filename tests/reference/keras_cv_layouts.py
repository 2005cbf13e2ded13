"""keras_cv's SD networks, the independent implementation sdgen's own layers are checked
against: built from keras_cv's layer classes at any width, and corrected to compute what
Stable Diffusion computes (``match_stable_diffusion``).

keras_cv's ``TextEncoder``, ``DiffusionModel`` (V2), ``Decoder`` and ``ImageEncoder``
fix their widths;
these builders produce the same layers in the same order at the widths of a
``sdgen.networks.layouts.Widths``, so sdgen's layouts (``sdgen.networks``) can be
compared with keras_cv's at tiny widths in seconds (tests/test_layouts.py), and at SD's
own widths with keras_cv's classes (``keras_cv_network``; test_tiny_conversion.py).
"""

from __future__ import annotations

import functools

from sdgen.networks.layouts import MAX_PROMPT_LENGTH, Widths

#: The epsilon of Stable Diffusion's GroupNorms in its VAE and in the U-Net's transformer
#: blocks (the U-Net's residual blocks use keras_cv's 1e-5, as SD does).
_SD_NORM_EPSILON = 1e-6


def match_stable_diffusion(network):
    """Make keras_cv's network compute what Stable Diffusion computes, and return it.

    keras_cv departs from SD (the CompVis code its weights come from, and diffusers) in
    ways that have nothing to do with weights: its GEGLU uses the tanh approximation of
    GELU where SD uses the exact one, ``TextEncoderV2`` uses ``keras.ops.gelu``'s tanh
    approximation where OpenCLIP uses the exact one, and its GroupNorms use epsilon 1e-5
    where SD's VAE and transformer blocks use 1e-6. The layers are changed in place.
    """
    import keras
    from keras_cv.src.models.stable_diffusion.diffusion_model import GEGLU, SpatialTransformer
    from keras_cv.src.models.stable_diffusion.text_encoder import CLIPEncoderLayer

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
    import keras

    return keras.ops.gelu(x, approximate=False)


@functools.cache
def _exact_geglu_class():
    from keras_cv.src.models.stable_diffusion.diffusion_model import GEGLU

    class ExactGEGLU(GEGLU):
        def call(self, inputs):
            x = self.dense(inputs)
            value, gate = x[..., : self.output_dim], x[..., self.output_dim :]
            return value * _exact_gelu(gate)

    return ExactGEGLU


def layer_names(network) -> list[str]:
    """The class names of ``network``'s layers in order (keras_cv's GEGLU corrected by
    ``match_stable_diffusion`` counts as a GEGLU, and the ``Lambda`` that ends its
    ``ImageEncoder``, the only one in its networks, as sdgen's ``PosteriorMean``)."""
    names = {"Lambda": "PosteriorMean"}
    return [
        names.get(type(layer).__name__, type(layer).__name__.removeprefix("Exact"))
        for layer in network._flatten_layers(include_self=False)
    ]


def keras_cv_network(role: str, size: int):
    """keras_cv's own SD 1.x class for ``role`` at ``size`` pixels (no download)."""
    from keras_cv.models.stable_diffusion import (
        Decoder,
        DiffusionModel,
        ImageEncoder,
        TextEncoder,
    )

    if role == "encoder":
        return match_stable_diffusion(ImageEncoder(download_weights=False))
    if role == "text_encoder":
        return match_stable_diffusion(TextEncoder(MAX_PROMPT_LENGTH, download_weights=False))
    if role == "diffusion_model":
        model = DiffusionModel(size, size, MAX_PROMPT_LENGTH, download_weights=False)
        return match_stable_diffusion(model)
    return match_stable_diffusion(Decoder(size, size, download_weights=False))


def text_encoder(widths: Widths, heads: int, v2: bool = False):
    import keras
    from keras_cv.src.models.stable_diffusion.text_encoder import (
        CLIPEmbedding,
        CLIPEncoderLayer,
        quick_gelu,
    )

    tokens = keras.layers.Input((MAX_PROMPT_LENGTH,), dtype="int32")
    positions = keras.layers.Input((MAX_PROMPT_LENGTH,), dtype="int32")
    x = CLIPEmbedding(49408, widths.text, MAX_PROMPT_LENGTH)([tokens, positions])
    activation = keras.ops.gelu if v2 else quick_gelu
    for _ in range(widths.text_layers):
        x = CLIPEncoderLayer(widths.text, heads, activation=activation)(x)
    x = keras.layers.LayerNormalization(epsilon=1e-5)(x)
    return match_stable_diffusion(keras.Model([tokens, positions], x))


def diffusion_model(widths: Widths, heads: int, size: int, fully_connected: bool = False):
    import keras
    from keras_cv.src.models.stable_diffusion.diffusion_model import (
        ResBlock,
        SpatialTransformer,
        Upsample,
    )
    from keras_cv.src.models.stable_diffusion.padded_conv2d import PaddedConv2D

    context = keras.layers.Input((MAX_PROMPT_LENGTH, widths.context))
    t_input = keras.layers.Input((widths.unet[0],))  # SD: 320, the first width
    latent = keras.layers.Input((size // 8, size // 8, 4))
    time_dim = 4 * widths.unet[0]
    t_emb = keras.layers.Dense(time_dim)(t_input)
    t_emb = keras.layers.Activation("swish")(t_emb)
    t_emb = keras.layers.Dense(time_dim)(t_emb)

    def attend(x, width):
        return SpatialTransformer(heads, width // heads, fully_connected)([x, context])

    x = PaddedConv2D(widths.unet[0], 3, padding=1)(latent)
    skips = [x]
    for level, width in enumerate(widths.unet):
        for _ in range(2):
            x = ResBlock(width)([x, t_emb])
            if level < 3:
                x = attend(x, width)
            skips.append(x)
        if level < 3:
            x = PaddedConv2D(width, 3, strides=2, padding=1)(x)
            skips.append(x)

    x = ResBlock(widths.unet[-1])([x, t_emb])
    x = attend(x, widths.unet[-1])
    x = ResBlock(widths.unet[-1])([x, t_emb])

    for level, width in enumerate(reversed(widths.unet)):
        for _ in range(3):
            x = keras.layers.Concatenate()([x, skips.pop()])
            x = ResBlock(width)([x, t_emb])
            if level > 0:
                x = attend(x, width)
        if level < 3:
            x = Upsample(width)(x)

    x = keras.layers.GroupNormalization(epsilon=1e-5)(x)
    x = keras.layers.Activation("swish")(x)
    output = PaddedConv2D(4, 3, padding=1)(x)
    return match_stable_diffusion(keras.Model([latent, t_input, context], output))


def decoder(widths: Widths, size: int):
    import keras
    from keras_cv.src.models.stable_diffusion.attention_block import AttentionBlock
    from keras_cv.src.models.stable_diffusion.padded_conv2d import PaddedConv2D
    from keras_cv.src.models.stable_diffusion.resnet_block import ResnetBlock

    mid = widths.decoder[0]
    layers = [
        keras.layers.Input((size // 8, size // 8, 4)),
        keras.layers.Rescaling(1.0 / 0.18215),
        PaddedConv2D(4, 1),
        PaddedConv2D(mid, 3, padding=1),
        ResnetBlock(mid),
        AttentionBlock(mid),
        ResnetBlock(mid),
    ]
    for level, width in enumerate(widths.decoder):
        layers += [ResnetBlock(width) for _ in range(3)]
        if level < 3:
            layers += [keras.layers.UpSampling2D(2), PaddedConv2D(width, 3, padding=1)]
    layers += [
        keras.layers.GroupNormalization(epsilon=1e-5),
        keras.layers.Activation("swish"),
        PaddedConv2D(3, 3, padding=1),
    ]
    return match_stable_diffusion(keras.Sequential(layers))


def encoder(widths: Widths, size: int):
    """keras_cv's ``ImageEncoder`` at the widths of ``widths.encoder_levels`` (its own
    are 128, 256, 512, 512)."""
    import keras
    from keras_cv.src.models.stable_diffusion.attention_block import AttentionBlock
    from keras_cv.src.models.stable_diffusion.padded_conv2d import PaddedConv2D
    from keras_cv.src.models.stable_diffusion.resnet_block import ResnetBlock

    a, b, c, d = tuple(reversed(widths.decoder))
    layers = [
        keras.layers.Input((size, size, 3)),
        PaddedConv2D(a, 3, padding=1),
        ResnetBlock(a),
        ResnetBlock(a),
        PaddedConv2D(a, 3, padding=((0, 1), (0, 1)), strides=2),
        ResnetBlock(b),
        ResnetBlock(b),
        PaddedConv2D(b, 3, padding=((0, 1), (0, 1)), strides=2),
        ResnetBlock(c),
        ResnetBlock(c),
        PaddedConv2D(c, 3, padding=((0, 1), (0, 1)), strides=2),
        ResnetBlock(d),
        ResnetBlock(d),
        ResnetBlock(d),
        AttentionBlock(d),
        ResnetBlock(d),
        keras.layers.GroupNormalization(epsilon=1e-5),
        keras.layers.Activation("swish"),
        PaddedConv2D(8, 3, padding=1),
        PaddedConv2D(8, 1),
        keras.layers.Lambda(lambda x: x[..., :4] * 0.18215),
    ]
    return match_stable_diffusion(keras.Sequential(layers))
