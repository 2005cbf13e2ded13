"""The text encoder with textual-inversion vectors put in and an earlier layer taken out.

keras_cv's text encoder maps ``[tokens, positions]`` to its last layer's states through
the final layer norm. Two features need more:

- **textual inversion** puts learned vectors in place of some token embeddings, so the
  model takes ``vectors (B, 77, C)`` and ``mask (B, 77, 1)`` as well: where the mask is
  1 the vector replaces the token embedding (``e * (1 - m) + v * m``, exact where the
  mask is 0), and the position embedding is added after;
- **clip skip** N (A1111's convention) stops N - 1 layers early and applies the final
  layer norm to that layer's output, as A1111 and transformers'
  ``final_layer_norm(hidden_states[-N])`` do.

``text_states_on_layers`` builds that model on the SAME layer objects as the encoder
given, so it shares every weight (nothing is copied or loaded again). It finds the
layers by what they hold (an embedding with ``token_embedding`` and
``position_embedding``, encoder blocks with ``clip_attn``, the last layer norm), so it
works for sdgen's layouts and for keras_cv's own ``TextEncoder``/``TextEncoderV2``.
"""

from __future__ import annotations

from ..errors import ConfigError


def encoder_layers(text_encoder) -> tuple[object, list, object]:
    """``(embedding, blocks, final_norm)``: the text encoder's layers in order."""
    import keras

    embedding = next(layer for layer in text_encoder.layers if hasattr(layer, "token_embedding"))
    blocks = [layer for layer in text_encoder.layers if hasattr(layer, "clip_attn")]
    norms = [
        layer for layer in text_encoder.layers if isinstance(layer, keras.layers.LayerNormalization)
    ]
    return embedding, blocks, norms[-1]


def check_clip_skip(clip_skip: int, layers: int) -> None:
    """``ConfigError`` unless 1 <= ``clip_skip`` <= ``layers``."""
    if isinstance(clip_skip, bool) or not isinstance(clip_skip, int):
        raise ConfigError(f"clip skip must be a whole number, got {clip_skip!r}")
    if not 1 <= clip_skip <= layers:
        raise ConfigError(
            f"clip skip must be from 1 to {layers} (this text encoder's layers), got {clip_skip}"
        )


def text_states_on_layers(text_encoder, clip_skip: int = 1):
    """A Keras model ``[tokens, positions, vectors, mask] -> states`` on ``text_encoder``'s
    layers: vectors put in where ``mask`` is 1, and the output of the block
    ``clip_skip - 1`` from the end, through the final layer norm."""
    import keras

    embedding, blocks, final_norm = encoder_layers(text_encoder)
    check_clip_skip(clip_skip, len(blocks))
    length = int(text_encoder.inputs[0].shape[1])
    width = int(embedding.token_embedding.output_dim)
    tokens = keras.Input((length,), dtype="int32", name="tokens")
    positions = keras.Input((length,), dtype="int32", name="positions")
    vectors = keras.Input((length, width), dtype="float32", name="vectors")
    mask = keras.Input((length, 1), dtype="float32", name="mask")
    token_states = embedding.token_embedding(tokens)
    dtype = token_states.dtype
    chosen = keras.ops.cast(mask, dtype)
    x = token_states * (1 - chosen) + keras.ops.cast(vectors, dtype) * chosen
    x = x + embedding.position_embedding(positions)
    for block in blocks[: len(blocks) - (clip_skip - 1)]:
        x = block(x)
    x = final_norm(x)
    return keras.Model([tokens, positions, vectors, mask], x, name=f"{text_encoder.name}_states")


__all__ = ["check_clip_skip", "encoder_layers", "text_states_on_layers"]
