"""Attention in query chunks (``layers.query_chunk``) gives what attention in one piece
does: each query's softmax is over all keys either way."""

from __future__ import annotations

import numpy as np

from sdgen.networks import layers


def test_query_chunks_shrink_only_past_the_limit():
    limit = layers.ATTENTION_CHUNK_ELEMENTS
    assert layers.query_chunk(4096, 4096, 8) == 4096  # 512x512's first level: one piece
    assert layers.query_chunk(16384, 16384, 8) == limit // (16384 * 8)  # 1024x1024
    assert layers.query_chunk(16384, 77, 8) == 16384  # cross-attention is small
    assert layers.query_chunk(3, 2**40, 1) == 1


def test_chunked_attention_equals_attention_in_one_piece(monkeypatch):
    import keras

    rng = np.random.default_rng(0)
    tokens, context_tokens, heads, size = 48, 20, 2, 8
    attention = layers.CrossAttention(heads, size)
    image = keras.Input((tokens, 16))
    context = keras.Input((context_tokens, 12))
    whole = keras.Model([image, context], attention(image, context))
    whole.set_weights([rng.standard_normal(w.shape).astype("float32") for w in whole.weights])
    x = rng.standard_normal((2, tokens, 16)).astype("float32")
    c = rng.standard_normal((2, context_tokens, 12)).astype("float32")
    expected = np.asarray(whole.predict_on_batch([x, c]))
    # 48 queries x 20 keys x 2 heads = 1920 weights; a limit of 500 takes 12 at a time
    monkeypatch.setattr(layers, "ATTENTION_CHUNK_ELEMENTS", 500)
    assert layers.query_chunk(tokens, context_tokens, heads) == 12
    chunked = keras.Model([image, context], attention(image, context))
    got = np.asarray(chunked.predict_on_batch([x, c]))
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
