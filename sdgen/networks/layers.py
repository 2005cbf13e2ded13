"""The layers of Stable Diffusion's networks, in Keras 3, weight for weight as keras_cv
lays them out.

keras_cv 0.9 is its last release, and its layer classes live in private modules
(``keras_cv.src.*``). These classes create the same weights in the same order as
keras_cv's (so keras_cv's published HDF5 files, which load by position, load into them),
and compute what Stable Diffusion computes: the exact GELU, and GroupNorm epsilon 1e-6 in
the VAE and in the U-Net's transformer blocks where keras_cv uses 1e-5 and a tanh GELU.
``tests/reference/test_layouts.py`` checks both against keras_cv's own classes.

Every kernel, bias and embedding starts as zeros: the caller always overwrites them
(loaded from files, or filled from a seed), and drawing SD's 860 million random numbers
cost 3 s of an 11-s build on 2 cores.
"""

from __future__ import annotations

import keras
from keras import ops

#: Stable Diffusion's GroupNorm epsilon in its VAE and the U-Net's transformer blocks.
SD_NORM_EPSILON = 1e-6
#: keras_cv's (and SD's) epsilon everywhere else.
NORM_EPSILON = 1e-5

_ZEROS = {"kernel_initializer": "zeros", "bias_initializer": "zeros"}


def dense(units: int, use_bias: bool = True) -> keras.layers.Dense:
    return keras.layers.Dense(units, use_bias=use_bias, **_ZEROS)


def group_norm(epsilon: float = NORM_EPSILON) -> keras.layers.GroupNormalization:
    return keras.layers.GroupNormalization(epsilon=epsilon)


def exact_gelu(x):
    return ops.gelu(x, approximate=False)


def quick_gelu(x):
    """CLIP ViT-L/14's activation (SD 1.x's text encoder)."""
    return x * ops.sigmoid(x * 1.702)


class PaddedConv2D(keras.layers.Layer):
    """Zero padding, then a convolution without padding (PyTorch's ``padding=p``)."""

    def __init__(self, filters, kernel_size, padding=0, strides=1, **kwargs):
        super().__init__(**kwargs)
        self.padding2d = keras.layers.ZeroPadding2D(padding)
        self.conv2d = keras.layers.Conv2D(filters, kernel_size, strides=strides, **_ZEROS)

    def call(self, inputs):
        return self.conv2d(self.padding2d(inputs))


# -- the text encoder ---------------------------------------------------------------------


class CLIPEmbedding(keras.layers.Layer):
    """Token embedding plus learned position embedding."""

    def __init__(self, input_dim, output_dim, max_length, **kwargs):
        super().__init__(**kwargs)
        self.token_embedding = keras.layers.Embedding(
            input_dim, output_dim, embeddings_initializer="zeros"
        )
        self.position_embedding = keras.layers.Embedding(
            max_length, output_dim, embeddings_initializer="zeros"
        )

    def call(self, inputs):
        tokens, positions = inputs
        return self.token_embedding(tokens) + self.position_embedding(positions)


class CLIPAttention(keras.layers.Layer):
    """Causal multi-head self-attention of CLIP's text transformer."""

    def __init__(self, embed_dim, num_heads, **kwargs):
        super().__init__(**kwargs)
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scale = self.head_dim**-0.5
        self.q_proj = dense(embed_dim)
        self.k_proj = dense(embed_dim)
        self.v_proj = dense(embed_dim)
        self.out_proj = dense(embed_dim)

    def _heads(self, x, length):
        x = ops.reshape(x, (-1, length, self.num_heads, self.head_dim))
        return ops.transpose(x, (0, 2, 1, 3))

    def call(self, inputs):
        _, length, embed_dim = inputs.shape
        mask = ops.triu(
            ops.ones((1, 1, length, length), dtype=self.compute_dtype) * -float("inf"), k=1
        )
        per_head = (-1, length, self.head_dim)
        query = ops.reshape(self._heads(self.q_proj(inputs) * self.scale, length), per_head)
        key = ops.reshape(self._heads(self.k_proj(inputs), length), per_head)
        value = ops.reshape(self._heads(self.v_proj(inputs), length), per_head)
        weights = query @ ops.transpose(key, (0, 2, 1))
        weights = ops.reshape(weights, (-1, self.num_heads, length, length)) + mask
        weights = ops.softmax(ops.reshape(weights, (-1, length, length)), axis=-1)
        output = ops.reshape(weights @ value, (-1, self.num_heads, length, self.head_dim))
        output = ops.reshape(ops.transpose(output, (0, 2, 1, 3)), (-1, length, embed_dim))
        return self.out_proj(output)


class CLIPEncoderLayer(keras.layers.Layer):
    """One pre-norm transformer block of the text encoder."""

    def __init__(self, embed_dim, num_heads, activation, **kwargs):
        super().__init__(**kwargs)
        self.layer_norm1 = keras.layers.LayerNormalization(epsilon=NORM_EPSILON)
        self.clip_attn = CLIPAttention(embed_dim, num_heads)
        self.layer_norm2 = keras.layers.LayerNormalization(epsilon=NORM_EPSILON)
        self.fc1 = dense(embed_dim * 4)
        self.fc2 = dense(embed_dim)
        self.activation = activation

    def call(self, inputs):
        x = inputs + self.clip_attn(self.layer_norm1(inputs))
        return x + self.fc2(self.activation(self.fc1(self.layer_norm2(x))))


# -- the U-Net ------------------------------------------------------------------------------


class ResBlock(keras.layers.Layer):
    """A residual block that adds the timestep embedding between its two convolutions."""

    def __init__(self, output_dim, **kwargs):
        super().__init__(**kwargs)
        self.output_dim = output_dim
        self.entry_flow = [
            group_norm(),
            keras.layers.Activation("swish"),
            PaddedConv2D(output_dim, 3, padding=1),
        ]
        self.embedding_flow = [keras.layers.Activation("swish"), dense(output_dim)]
        self.exit_flow = [
            group_norm(),
            keras.layers.Activation("swish"),
            PaddedConv2D(output_dim, 3, padding=1),
        ]

    def build(self, input_shape):
        if input_shape[0][-1] != self.output_dim:
            self.residual_projection = PaddedConv2D(self.output_dim, 1)
        else:
            self.residual_projection = None

    def call(self, inputs):
        inputs, embeddings = inputs
        x = inputs
        for layer in self.entry_flow:
            x = layer(x)
        for layer in self.embedding_flow:
            embeddings = layer(embeddings)
        x = x + embeddings[:, None, None]
        for layer in self.exit_flow:
            x = layer(x)
        residual = inputs if self.residual_projection is None else self.residual_projection(inputs)
        return x + residual


class CrossAttention(keras.layers.Layer):
    """Multi-head attention from the image tokens to ``context`` (or to themselves)."""

    def __init__(self, num_heads, head_size, **kwargs):
        super().__init__(**kwargs)
        self.to_q = dense(num_heads * head_size, use_bias=False)
        self.to_k = dense(num_heads * head_size, use_bias=False)
        self.to_v = dense(num_heads * head_size, use_bias=False)
        self.scale = head_size**-0.5
        self.num_heads = num_heads
        self.head_size = head_size
        self.out_proj = dense(num_heads * head_size)

    def call(self, inputs, context=None):
        context = inputs if context is None else context
        heads, size = self.num_heads, self.head_size
        q = ops.reshape(self.to_q(inputs), (-1, inputs.shape[1], heads, size))
        k = ops.reshape(self.to_k(context), (-1, context.shape[1], heads, size))
        v = ops.reshape(self.to_v(context), (-1, context.shape[1], heads, size))
        q = ops.transpose(q, (0, 2, 1, 3))  # (batch, heads, tokens, size)
        k = ops.transpose(k, (0, 2, 3, 1))  # (batch, heads, size, context tokens)
        v = ops.transpose(v, (0, 2, 1, 3))  # (batch, heads, context tokens, size)
        tokens = inputs.shape[1]
        chunk = query_chunk(tokens, context.shape[1], heads)
        parts = []
        for start in range(0, tokens, chunk):  # one part unless the weights would be huge
            weights = keras.activations.softmax(
                _batched_dot(q[:, :, start : start + chunk], k) * self.scale
            )
            parts.append(_batched_dot(weights, v))
        attended = parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=2)
        attended = ops.transpose(attended, (0, 2, 1, 3))
        return self.out_proj(ops.reshape(attended, (-1, tokens, heads * size)))


#: The most attention weights (query x key tokens x heads, of one row) computed at
#: once: 2^28 float32, 1 GiB. Self-attention at 1024x1024 (16,384 tokens, 8 heads) would
#: hold 8 GiB, and its softmax another 8, so its queries are taken in chunks; each query's
#: softmax is over all keys either way, so the result is the same. 512x512 (4,096 tokens,
#: 512 MiB) and smaller run in one piece, as before.
ATTENTION_CHUNK_ELEMENTS = 2**28


def query_chunk(queries: int, keys: int, heads: int) -> int:
    """How many query tokens ``CrossAttention`` takes at once: all of them when their
    weights fit ``ATTENTION_CHUNK_ELEMENTS``, else the largest power-of-two share that does
    (at least one)."""
    chunk = queries
    while chunk > 1 and chunk * keys * heads > ATTENTION_CHUNK_ELEMENTS:
        chunk = -(-chunk // 2)
    return chunk


def _batched_dot(a, b):
    """``a @ b`` over (batch, heads), as keras_cv computes it (a Dot layer on 3-D)."""
    aa = ops.reshape(a, (-1, a.shape[2], a.shape[3]))
    bb = ops.reshape(b, (-1, b.shape[2], b.shape[3]))
    cc = keras.layers.Dot(axes=(2, 1))([aa, bb])
    return ops.reshape(cc, (-1, a.shape[1], cc.shape[1], cc.shape[2]))


class GEGLU(keras.layers.Layer):
    """A dense layer to twice ``output_dim``, one half gating the other through GELU."""

    def __init__(self, output_dim, **kwargs):
        super().__init__(**kwargs)
        self.output_dim = output_dim
        self.dense = dense(output_dim * 2)

    def call(self, inputs):
        x = self.dense(inputs)
        value, gate = x[..., : self.output_dim], x[..., self.output_dim :]
        return value * exact_gelu(gate)


class BasicTransformerBlock(keras.layers.Layer):
    """Self-attention, cross-attention to the text, then a GEGLU feed-forward."""

    def __init__(self, dim, num_heads, head_size, **kwargs):
        super().__init__(**kwargs)
        self.norm1 = keras.layers.LayerNormalization(epsilon=NORM_EPSILON)
        self.attn1 = CrossAttention(num_heads, head_size)
        self.norm2 = keras.layers.LayerNormalization(epsilon=NORM_EPSILON)
        self.attn2 = CrossAttention(num_heads, head_size)
        self.norm3 = keras.layers.LayerNormalization(epsilon=NORM_EPSILON)
        self.geglu = GEGLU(dim * 4)
        self.dense = dense(dim)

    def call(self, inputs):
        inputs, context = inputs
        x = self.attn1(self.norm1(inputs), context=None) + inputs
        x = self.attn2(self.norm2(x), context=context) + x
        return self.dense(self.geglu(self.norm3(x))) + x


class SpatialTransformer(keras.layers.Layer):
    """A transformer block over the pixels of a feature map, conditioned on the text.
    SD 1.x projects in and out with 1x1 convolutions, SD 2.x with dense layers
    (``fully_connected``)."""

    def __init__(self, num_heads, head_size, fully_connected=False, **kwargs):
        super().__init__(**kwargs)
        self.norm = group_norm(SD_NORM_EPSILON)
        channels = num_heads * head_size
        self.proj1 = dense(channels) if fully_connected else PaddedConv2D(channels, 1)
        self.transformer_block = BasicTransformerBlock(channels, num_heads, head_size)
        self.proj2 = dense(channels) if fully_connected else PaddedConv2D(channels, 1)

    def call(self, inputs):
        inputs, context = inputs
        _, h, w, c = inputs.shape
        x = ops.reshape(self.proj1(self.norm(inputs)), (-1, h * w, c))
        x = ops.reshape(self.transformer_block([x, context]), (-1, h, w, c))
        return self.proj2(x) + inputs


class Upsample(keras.layers.Layer):
    """Nearest-neighbour 2x upsampling, then a 3x3 convolution."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.ups = keras.layers.UpSampling2D(2)
        self.conv = PaddedConv2D(channels, 3, padding=1)

    def call(self, inputs):
        return self.conv(self.ups(inputs))


# -- the VAE ---------------------------------------------------------------------------------


class ResnetBlock(keras.layers.Layer):
    """The VAE's residual block (no timestep)."""

    def __init__(self, output_dim, **kwargs):
        super().__init__(**kwargs)
        self.output_dim = output_dim
        self.norm1 = group_norm(SD_NORM_EPSILON)
        self.conv1 = PaddedConv2D(output_dim, 3, padding=1)
        self.norm2 = group_norm(SD_NORM_EPSILON)
        self.conv2 = PaddedConv2D(output_dim, 3, padding=1)

    def build(self, input_shape):
        if input_shape[-1] != self.output_dim:
            self.residual_projection = PaddedConv2D(self.output_dim, 1)
        else:
            self.residual_projection = None

    def call(self, inputs):
        x = self.conv1(keras.activations.swish(self.norm1(inputs)))
        x = self.conv2(keras.activations.swish(self.norm2(x)))
        residual = inputs if self.residual_projection is None else self.residual_projection(inputs)
        return x + residual


class AttentionBlock(keras.layers.Layer):
    """Single-head self-attention over the pixels of the VAE's lowest level."""

    def __init__(self, output_dim, **kwargs):
        super().__init__(**kwargs)
        self.output_dim = output_dim
        self.norm = group_norm(SD_NORM_EPSILON)
        self.q = PaddedConv2D(output_dim, 1)
        self.k = PaddedConv2D(output_dim, 1)
        self.v = PaddedConv2D(output_dim, 1)
        self.proj_out = PaddedConv2D(output_dim, 1)

    def call(self, inputs):
        x = self.norm(inputs)
        q, k, v = self.q(x), self.k(x), self.v(x)
        shape = ops.shape(q)
        h, w, c = shape[1], shape[2], shape[3]
        q = ops.reshape(q, (-1, h * w, c))
        k = ops.reshape(ops.transpose(k, (0, 3, 1, 2)), (-1, c, h * w))
        y = q @ k
        y = y * 1 / ops.sqrt(ops.cast(c, self.compute_dtype))
        y = keras.activations.softmax(y)
        v = ops.reshape(ops.transpose(v, (0, 3, 1, 2)), (-1, c, h * w))
        x = ops.transpose(v @ ops.transpose(y, (0, 2, 1)), (0, 2, 1))
        return self.proj_out(ops.reshape(x, (-1, h, w, c))) + inputs


class PosteriorMean(keras.layers.Layer):
    """The VAE encoder's last step: the posterior's mean (the first ``channels`` of its
    mean and log-variance) times ``scale``, the latents the U-Net works on. keras_cv's
    ``ImageEncoder`` does the same in a ``Lambda``."""

    def __init__(self, channels: int, scale: float, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.scale = scale

    def call(self, inputs):
        return inputs[..., : self.channels] * self.scale

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "scale": self.scale}
