"""keras_cv's SD networks laid out at any width, from keras_cv's own layer classes.

keras_cv's ``TextEncoder``, ``DiffusionModel`` (V2) and ``Decoder`` fix their widths;
these builders produce the same layers in the same order at the widths of a
``sdgen.convert.Widths``, so the checkpoint conversion can be checked against
diffusers at tiny size in seconds. ``test_tiny_conversion.py`` checks that at SD's own
widths they list exactly the weights keras_cv's classes do.
"""

from __future__ import annotations

from sdgen.convert import Widths
from sdgen.models import MAX_PROMPT_LENGTH, match_stable_diffusion


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
