"""Stable Diffusion's networks laid out as keras_cv lays them out, at any width.

keras_cv's ``TextEncoder``/``TextEncoderV2``, ``DiffusionModel``/``DiffusionModelV2``,
``Decoder`` and ``ImageEncoder`` (the VAE encoder, which image-to-image tasks use) fix
their widths, their 77-token context and the U-Net's 4 input
channels. These builders make the same layers in the same order from a ``Widths``, for
any context length and number of input channels (9 for inpainting models), so that SD
1.x and 2.x at full size and the ``tiny`` model at small widths are one code path, and
keras_cv's published weight files load into them.

Calling convention (keras_cv's):

- text encoder: ``[tokens (B, 77) int32, positions (B, 77) int32] -> (B, 77, C)``
- diffusion model: ``[latent (B, H/8, W/8, in_channels), timestep_embedding (B, unet[0]),
  context (B, L, C)] -> (B, H/8, W/8, 4)``
- decoder: ``latent (B, H/8, W/8, 4) -> image (B, H, W, 3)`` in [-1, 1]
- encoder: ``image (B, H, W, 3)`` in [-1, 1] ``-> latent (B, H/8, W/8, 4)``: the VAE
  posterior's mean times ``LATENT_SCALE`` (no sampling), as keras_cv's ``ImageEncoder``
"""

from __future__ import annotations

from dataclasses import dataclass

from ..text.tokenizer import MAX_PROMPT_LENGTH

#: CLIP's vocabulary size (48,894 merges + 512 byte tokens + 2 special tokens).
VOCAB_SIZE = 49408
#: The latent channels of SD's VAE.
LATENT_CHANNELS = 4
#: The VAE's latent scale: latents are divided by it before decoding.
LATENT_SCALE = 0.18215


@dataclass(frozen=True)
class Widths:
    """The sizes a layout (and the checkpoint weight tables) depend on: SD 1.x's by
    default."""

    text: int = 768
    text_layers: int = 12
    #: The U-Net's four levels; its time embedding is 4x the first, and its timestep
    #: input (the sinusoidal embedding) as wide as the first.
    unet: tuple[int, int, int, int] = (320, 640, 1280, 1280)
    context: int = 768
    #: The VAE decoder's four levels, from the latent side; the encoder's are the same
    #: from the image side (``encoder_levels``).
    decoder: tuple[int, int, int, int] = (512, 512, 256, 128)

    @property
    def encoder_levels(self) -> tuple[int, int, int, int]:
        """The VAE encoder's four levels, from the image side: SD's VAE is symmetric,
        so they are the decoder's reversed (128, 256, 512, 512 at full size)."""
        return tuple(reversed(self.decoder))


SD1_WIDTHS = Widths()
SD2_WIDTHS = Widths(text=1024, text_layers=23, context=1024)


@dataclass(frozen=True)
class Attention:
    """How a family splits the U-Net's attention: a fixed number of ``heads`` at every
    level (SD 1.x: 8), or heads of a fixed ``head_size`` (SD 2.x: 64); SD 2.x also
    projects in and out of its transformers with dense layers (``fully_connected``)."""

    heads: int | None = 8
    head_size: int | None = None
    fully_connected: bool = False

    def split(self, width: int) -> tuple[int, int]:
        """(heads, head size) at a level ``width`` channels wide."""
        if self.heads is not None:
            return self.heads, width // self.heads
        return width // self.head_size, self.head_size


def text_encoder(widths: Widths, heads: int, activation: str = "quick_gelu", name=None):
    """CLIP's text transformer: ``activation`` is ``quick_gelu`` (SD 1.x's CLIP ViT-L/14)
    or ``gelu`` (SD 2.x's OpenCLIP ViT-H/14, whose last block keras_cv leaves out)."""
    import keras

    from . import layers

    act = {"quick_gelu": layers.quick_gelu, "gelu": layers.exact_gelu}[activation]
    tokens = keras.layers.Input((MAX_PROMPT_LENGTH,), dtype="int32", name="tokens")
    positions = keras.layers.Input((MAX_PROMPT_LENGTH,), dtype="int32", name="positions")
    x = layers.CLIPEmbedding(VOCAB_SIZE, widths.text, MAX_PROMPT_LENGTH)([tokens, positions])
    for _ in range(widths.text_layers):
        x = layers.CLIPEncoderLayer(widths.text, heads, activation=act)(x)
    x = keras.layers.LayerNormalization(epsilon=layers.NORM_EPSILON)(x)
    return keras.Model([tokens, positions], x, name=name)


def diffusion_model(
    widths: Widths,
    attention: Attention,
    height: int,
    width: int,
    context_length: int = MAX_PROMPT_LENGTH,
    in_channels: int = LATENT_CHANNELS,
    name=None,
):
    """The U-Net: four levels of two residual blocks (with a transformer on the first
    three), a middle block, and four levels of three on the way up."""
    import keras

    from . import layers

    context = keras.layers.Input((context_length, widths.context), name="context")
    t_input = keras.layers.Input((widths.unet[0],), name="timestep_embedding")
    latent = keras.layers.Input((height // 8, width // 8, in_channels), name="latent")
    time_dim = 4 * widths.unet[0]
    t_emb = layers.dense(time_dim)(t_input)
    t_emb = keras.layers.Activation("swish")(t_emb)
    t_emb = layers.dense(time_dim)(t_emb)

    def attend(x, channels):
        heads, size = attention.split(channels)
        return layers.SpatialTransformer(heads, size, attention.fully_connected)([x, context])

    x = layers.PaddedConv2D(widths.unet[0], 3, padding=1)(latent)
    skips = [x]
    for level, channels in enumerate(widths.unet):
        for _ in range(2):
            x = layers.ResBlock(channels)([x, t_emb])
            if level < 3:
                x = attend(x, channels)
            skips.append(x)
        if level < 3:
            x = layers.PaddedConv2D(channels, 3, strides=2, padding=1)(x)
            skips.append(x)

    x = layers.ResBlock(widths.unet[-1])([x, t_emb])
    x = attend(x, widths.unet[-1])
    x = layers.ResBlock(widths.unet[-1])([x, t_emb])

    for level, channels in enumerate(reversed(widths.unet)):
        for _ in range(3):
            x = keras.layers.Concatenate()([x, skips.pop()])
            x = layers.ResBlock(channels)([x, t_emb])
            if level > 0:
                x = attend(x, channels)
        if level < 3:
            x = layers.Upsample(channels)(x)

    x = layers.group_norm()(x)
    x = keras.layers.Activation("swish")(x)
    output = layers.PaddedConv2D(LATENT_CHANNELS, 3, padding=1)(x)
    return keras.Model([latent, t_input, context], output, name=name)


def decoder(widths: Widths, height: int, width: int, name=None):
    """The VAE decoder: unscale the latents, a middle block with attention, then three
    2x upsamplings over four levels of three residual blocks."""
    import keras

    from . import layers

    mid = widths.decoder[0]
    stack = [
        keras.layers.Input((height // 8, width // 8, LATENT_CHANNELS)),
        keras.layers.Rescaling(1.0 / LATENT_SCALE),
        layers.PaddedConv2D(LATENT_CHANNELS, 1),
        layers.PaddedConv2D(mid, 3, padding=1),
        layers.ResnetBlock(mid),
        layers.AttentionBlock(mid),
        layers.ResnetBlock(mid),
    ]
    for level, channels in enumerate(widths.decoder):
        stack += [layers.ResnetBlock(channels) for _ in range(3)]
        if level < 3:
            stack += [keras.layers.UpSampling2D(2), layers.PaddedConv2D(channels, 3, padding=1)]
    stack += [
        layers.group_norm(layers.SD_NORM_EPSILON),
        keras.layers.Activation("swish"),
        layers.PaddedConv2D(3, 3, padding=1),
    ]
    return keras.Sequential(stack, name=name)


def encoder(widths: Widths, height: int, width: int, name=None):
    """The VAE encoder: four levels of two residual blocks, each but the last ending in a
    2x downsampling (a stride-2 convolution padded on the bottom and right only, as SD
    pads), a middle block with attention, the mean and log-variance (``quant_conv``
    included), and of them the mean times ``LATENT_SCALE``."""
    import keras

    from . import layers

    levels = widths.encoder_levels
    stack = [
        keras.layers.Input((height, width, 3)),
        layers.PaddedConv2D(levels[0], 3, padding=1),
    ]
    for level, channels in enumerate(levels):
        stack += [layers.ResnetBlock(channels) for _ in range(2)]
        if level < 3:
            stack.append(layers.PaddedConv2D(channels, 3, padding=((0, 1), (0, 1)), strides=2))
    mid = levels[-1]
    stack += [
        layers.ResnetBlock(mid),
        layers.AttentionBlock(mid),
        layers.ResnetBlock(mid),
        layers.group_norm(layers.SD_NORM_EPSILON),
        keras.layers.Activation("swish"),
        layers.PaddedConv2D(2 * LATENT_CHANNELS, 3, padding=1),
        layers.PaddedConv2D(2 * LATENT_CHANNELS, 1),
        layers.PosteriorMean(LATENT_CHANNELS, LATENT_SCALE),
    ]
    return keras.Sequential(stack, name=name)


def latent_size(model) -> tuple[int, int]:
    """The (height, width) in pixels that a diffusion model or decoder was built for."""
    shape = model.inputs[0].shape
    return int(shape[1]) * 8, int(shape[2]) * 8
