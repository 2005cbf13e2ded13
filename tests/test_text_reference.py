"""The text stage against the rules it follows and the tools it must agree with.

- **Conformance** (fast, no torch): A1111's own doctest vectors for the emphasis parser,
  its chunking rules (75-token chunks, comma backtrack, BREAK, embeddings that never
  straddle two chunks, empty prompts, SD 2.x's 0 padding) and its weighting modes, as
  ``../shared/PROMPTS.md`` gives them.
- **Unchanged states**: a prompt of at most 75 tokens without brackets or embeddings is
  encoded bit for bit as before the text stage existed (``encode_prompt`` and one
  ``backend.encode`` on [negative, positive]), so its pixels are unchanged.
- **Reference** (torch, transformers and diffusers on the CPU): clip skip against
  transformers' ``CLIPTextModel`` (``final_layer_norm(hidden_states[-N])``) and diffusers'
  ``encode_prompt(clip_skip=N - 1)``, and textual inversion against diffusers'
  ``load_textual_inversion``, on the same random weights converted by sdgen's own tables,
  within 1e-4.
"""

from __future__ import annotations

import copy
import gzip
import types

import numpy as np
import pytest
from reference.old_text_path import encode_prompt

from sdgen import convert
from sdgen.adapters.textual_inversion import EmbeddingLibrary
from sdgen.families import FAMILIES
from sdgen.families.tiny import TINY_WIDTHS
from sdgen.networks import layouts
from sdgen.networks.layouts import Widths
from sdgen.pipeline import Pipeline
from sdgen.runtimes.tensorflow import DeviceSettings, TensorFlowBackend
from sdgen.text.chunks import chunk_prompt
from sdgen.text.conditioning import TextOptions, encode_conditioning, prompt_chunks
from sdgen.text.prompt_syntax import parse_emphasis
from sdgen.text.tokenizer import END_OF_TEXT, load_tokenizer
from sdgen.text.weighting import weigh

LIMIT = 1e-4
#: A text encoder of tiny width with more layers than tiny's 2, so that clip skip has
#: four layers to choose from; the U-Net and decoder widths are not used.
DEEP = Widths(
    text=64, text_layers=4, unet=TINY_WIDTHS.unet, context=64, decoder=TINY_WIDTHS.decoder
)
HEADS = 2


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def _one(tokenizer, word: str) -> int:
    (token,) = tokenizer.tokens(word)
    return token


def _write_embeddings(folder, tensors: dict[str, tuple[str, np.ndarray]]):
    """Embedding files in ``folder``: name -> (format, vectors (n, C)). "pt" is an A1111
    file (``string_to_param``), "diffusers" a ``{token: vectors}`` safetensors file as
    diffusers' textual-inversion training saves it, "emb_params" a safetensors file."""
    import safetensors.numpy

    folder.mkdir(exist_ok=True)
    paths = {}
    for name, (form, vectors) in tensors.items():
        if form == "pt":
            import torch

            path = folder / f"{name}.pt"
            parameter = torch.nn.Parameter(torch.from_numpy(vectors.copy()))
            torch.save({"string_to_param": {"*": parameter}, "name": name, "step": 10}, path)
        else:
            path = folder / f"{name}.safetensors"
            if form == "diffusers":  # one vector as (C,), as sd-concepts-library's files
                contents = {name: vectors[0] if len(vectors) == 1 else vectors}
            else:
                contents = {"emb_params": vectors}
            safetensors.numpy.save_file(contents, str(path))
        paths[name] = path
    return paths


# --- 1. emphasis parsing: A1111's doctest vectors, exactly ---------------------------

A1111_VECTORS = [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    (
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        [
            ("a ", 1.0),
            ("house", 1.5730000000000004),
            (" ", 1.1),
            ("on", 1.0),
            (" a ", 1.1),
            ("hill", 0.55),
            (", sun, ", 1.1),
            ("sky", 1.4641000000000006),
            (".", 1.1),
        ],
    ),
    ("", [("", 1.0)]),
    ("(cat:abc)", [("cat:abc", 1.1)]),  # not a number: plain text in a 1.1 group
]


@pytest.mark.parametrize(("text", "expected"), A1111_VECTORS)
def test_parse_emphasis_gives_a1111s_fragments_and_weights_exactly(text, expected):
    got = [(fragment.text, fragment.weight) for fragment in parse_emphasis(text)]
    assert got == expected  # float equality: the same multiplications in the same order


# --- 2. chunking ---------------------------------------------------------------------


def test_76_tokens_make_two_chunks_counted_as_a1111_counts(tokenizer):
    cat = _one(tokenizer, "cat")
    chunks = chunk_prompt(tokenizer, " ".join(["cat"] * 76))
    assert [len(chunk) for chunk in chunks.chunks] == [75, 1]
    assert {slot.token for chunk in chunks.chunks for slot in chunk} == {cat}
    assert (chunks.token_count, chunks.counted, chunks.context_length) == (76, "76/150", 154)
    one = chunk_prompt(tokenizer, " ".join(["cat"] * 75))
    assert (len(one.chunks), one.counted) == (1, "75/75")


@pytest.mark.parametrize(("comma", "moved"), [(55, True), (60, True), (54, False)])
def test_comma_backtrack_moves_the_words_after_a_comma_at_most_20_back(tokenizer, comma, moved):
    words = ["cat"] * comma + [","] + ["dog"] * 30
    chunks = chunk_prompt(tokenizer, " ".join(words))
    first, second = chunks.chunks
    dog = _one(tokenizer, "dog")
    if moved:  # the chunk ends at the comma; all its dogs start the next one
        assert len(first) == comma + 1 and first[-1].token == tokenizer.comma
        assert [slot.token for slot in second] == [dog] * 30
    else:  # 75 - 54 = 21 tokens back: the chunk is cut where it fills up
        assert len(first) == 75 and first[comma].token == tokenizer.comma
        assert len(second) == 30 - (75 - comma - 1)
    assert chunks.token_count == 75 + len(second)


def test_break_closes_the_chunk(tokenizer):
    chunks = chunk_prompt(tokenizer, "a cat BREAK a dog")
    a, cat, dog = (_one(tokenizer, word) for word in ("a", "cat", "dog"))
    assert [[slot.token for slot in chunk] for chunk in chunks.chunks] == [[a, cat], [a, dog]]
    assert chunks.counted == "77/150"
    start, end = tokenizer.start_of_text, tokenizer.end_of_text
    ids = chunks.token_ids(start, end, end)
    assert ids.shape == (2, 77)
    assert list(ids[0]) == [start, a, cat] + [end] * 74
    # "off" reads the same text as plain words: one chunk, "break" a word in it
    assert len(chunk_prompt(tokenizer, "a cat BREAK a dog", "off").chunks) == 1


@pytest.mark.parametrize(("before", "chunk_sizes"), [(73, [73, 3]), (72, [75]), (74, [74, 3])])
def test_an_embedding_of_three_vectors_never_straddles_two_chunks(
    tokenizer, tmp_path, before, chunk_sizes
):
    vectors = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)
    _write_embeddings(tmp_path / "emb", {"trio": ("emb_params", vectors)})
    library = EmbeddingLibrary(tmp_path / "emb")
    chunks = chunk_prompt(tokenizer, " ".join(["cat"] * before + ["trio"]), embeddings=library)
    assert [len(chunk) for chunk in chunks.chunks] == chunk_sizes
    last = chunks.chunks[-1]
    assert [(slot.embedding, slot.vector) for slot in last[-3:]] == [("trio", i) for i in range(3)]
    inserted, mask = chunks.vectors(64)
    row = len(chunks.chunks) - 1
    positions = np.flatnonzero(mask[row])
    assert list(positions) == [len(last) - 2, len(last) - 1, len(last)]  # after the start
    np.testing.assert_array_equal(inserted[row, positions], vectors)
    assert mask.sum() == 3


def test_an_empty_prompt_is_one_chunk_of_start_and_76_end_tokens(tokenizer):
    chunks = chunk_prompt(tokenizer, "")
    start, end = tokenizer.start_of_text, tokenizer.end_of_text
    assert chunks.chunks == ((),) and chunks.counted == "0/75"
    assert list(chunks.token_ids(start, end, end)[0]) == [start] + [end] * 76


def test_sd2_pads_with_0_after_the_end_token(tokenizer):
    assert FAMILIES["sd-v2"].pad_token == 0
    seen = []

    def encode(tokens, positions, **extra):
        seen.append(tokens)
        return np.zeros((*tokens.shape, 8), np.float32)

    encode_conditioning(tokenizer, encode, "", "a cat " * 40, pad=0)
    (tokens,) = seen
    start, end = tokenizer.start_of_text, tokenizer.end_of_text
    words = tokenizer.tokens("a cat " * 40)
    assert tokens.shape == (3, 77)  # the negative's chunk, then the prompt's two
    assert list(tokens[0]) == [start, end] + [0] * 75
    assert list(tokens[1]) == [start, *words[:75], end]
    assert list(tokens[2]) == [start, *words[75:], end] + [0] * 70


# --- 3. weighting --------------------------------------------------------------------


def _states(chunks: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.3 + rng.standard_normal((chunks, 77, 16))).astype(np.float32)


def _weights(chunks: int) -> np.ndarray:
    weights = np.ones((chunks, 77), np.float32)
    weights[0, 3:6] = 1.5
    weights[0, 9] = 0.5
    if chunks > 1:
        weights[1, 40] = 1.21
    return weights


def test_original_emphasis_weights_then_restores_each_chunks_mean():
    states, weights = _states(2), _weights(2)
    got = weigh(states, weights, "original")
    for k in range(2):
        weighted = states[k] * weights[k][:, None]
        expected = weighted * (states[k].mean() / weighted.mean())  # A1111's "Original"
        np.testing.assert_allclose(got[k], expected, rtol=1e-6)
        np.testing.assert_allclose(got[k].mean(), states[k].mean(), rtol=1e-5)
    assert not np.allclose(got, states)


def test_no_norm_emphasis_weights_without_restoring_the_mean():
    states, weights = _states(2), _weights(2)
    got = weigh(states, weights, "no-norm")
    np.testing.assert_array_equal(got, states * weights[..., None])
    assert abs(got[0].mean() - states[0].mean()) > 1e-3


@pytest.mark.parametrize("emphasis", ["original", "no-norm", "ignore", "off"])
def test_weights_of_1_leave_the_states_bit_identical(emphasis):
    states = _states(3)
    np.testing.assert_array_equal(weigh(states, np.ones((3, 77), np.float32), emphasis), states)
    # and a chunk of weight 1 beside a weighted one keeps its bits
    weights = _weights(1).repeat(2, 0)
    weights[1] = 1.0
    np.testing.assert_array_equal(weigh(states[:2], weights, emphasis)[1], states[1])


def test_parsed_weights_reach_the_states_of_their_tokens(tokenizer):
    states = _states(2, seed=3)

    def encode(tokens, positions, **extra):
        return states[: len(tokens)]

    got = encode_conditioning(tokenizer, encode, "", "a (red:1.5) cat", options=TextOptions())
    weights = np.ones(77, np.float32)
    weights[2] = 1.5  # start, "a", "red"
    weighted = states[1] * weights[:, None]
    expected = weighted * (states[1].mean() / weighted.mean())
    np.testing.assert_allclose(got.positive[0], expected, rtol=1e-6)
    np.testing.assert_array_equal(got.negative[0], states[0])


# --- 4. prompts of at most 75 tokens: the states of before, bit for bit -----------------

PLAIN_PROMPTS = [
    ("", "a lighthouse on a cliff"),
    ("blurry, low quality", "Portrait of an OLD sailor, oil painting; dramatic light!"),
    ("ugly", " ".join(["cat"] * 75)),  # exactly 75 tokens: still one chunk
]


@pytest.mark.parametrize(("negative", "prompt"), PLAIN_PROMPTS)
def test_plain_prompts_of_at_most_75_tokens_encode_bit_for_bit_as_before(
    tiny_pipeline, tmp_path, negative, prompt
):
    p = tiny_pipeline
    pipeline = Pipeline(p.spec, p.tokenizer, p.text_encoder, p.diffusion_model, p.decoder)
    tokens = np.stack([encode_prompt(p.tokenizer, text) for text in (negative, prompt)])
    positions = np.tile(np.arange(77, dtype=np.int32), (2, 1))
    before = pipeline.backend.encode(tokens, positions)
    assert np.abs(before).max() > 0.5
    vectors = np.ones((1, 64), np.float32)
    _write_embeddings(tmp_path / "emb", {"unused": ("emb_params", vectors)})
    for library in (None, EmbeddingLibrary(tmp_path / "emb")):  # a library, not used
        pipeline.embeddings = library
        for emphasis in ("original", "no-norm", "ignore", "off"):
            now = pipeline.encode(negative, prompt, TextOptions(emphasis))
            np.testing.assert_array_equal(now.negative[0], before[0])
            np.testing.assert_array_equal(now.positive[0], before[1])


# --- 5. reference: clip skip and textual inversion against transformers/diffusers -------


def _require(module: str):
    from reference.conftest import require

    return require(module)


def _clip_text_model(widths: Widths, seed: int):
    """transformers' CLIPTextModel of SD 1.x's kind at ``widths``, random weights."""
    transformers = _require("transformers")
    from reference.sd_architectures import perturb

    _require("torch").manual_seed(seed)
    config = transformers.CLIPTextConfig(
        vocab_size=49408,
        hidden_size=widths.text,
        intermediate_size=4 * widths.text,
        num_hidden_layers=widths.text_layers,
        num_attention_heads=HEADS,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )
    model = transformers.CLIPTextModel(config)
    perturb(model, seed)
    return model.eval()


def _final_layer_norm(model):
    """CLIPTextModel's final layer norm: ``model.final_layer_norm`` in transformers 5,
    ``model.text_model.final_layer_norm`` before."""
    return getattr(model, "text_model", model).final_layer_norm


def _keras_text_encoder(model, family: str, widths: Widths):
    """sdgen's Keras text encoder with ``model``'s weights, mapped by the converter's
    tables, as a diffusers folder's ``text_encoder`` would be."""
    tensors = {}
    for key, value in model.state_dict().items():
        # transformers 5 names CLIPTextModel's tensors without the text_model. prefix;
        # sdgen's diffusers-folder reader adds it back, and so does this
        key = key if key.startswith("text_model.") else f"text_model.{key}"
        tensors[f"text_encoder.{key}"] = value.detach().numpy()
    tables = {"text_encoder": convert.family_tables(family, widths)["text_encoder"]}
    weights = convert.map_weights(tensors, "diffusers", params=tables)
    encoder = layouts.text_encoder(widths, HEADS, "quick_gelu")
    encoder.set_weights(weights["text_encoder"])
    return encoder


def _hf_tokenizer(tokenizer):
    """transformers' CLIPTokenizer with sdgen's bundled BPE vocabulary (there is no
    network to fetch openai/clip-vit-large-patch14's): its vocabulary is the id table
    sdgen's tokenizer builds from the file, its merges the file's merge lines, given to
    the constructor in memory rather than written out as vocab.json and merges.txt."""
    transformers = _require("transformers")
    from sdgen.text.tokenizer import _MERGES, VOCABULARY_PATH

    with gzip.open(VOCABULARY_PATH, "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : _MERGES + 1]]
    return transformers.CLIPTokenizer(vocab=dict(tokenizer.ids), merges=merges, model_max_length=77)


def _diffusers_stub(hf_tokenizer, model):
    """The least of a diffusers pipeline that its textual-inversion loader and its
    ``StableDiffusionPipeline.encode_prompt`` need: a tokenizer and a text encoder."""
    diffusers = _require("diffusers")
    from diffusers.loaders import TextualInversionLoaderMixin

    class Stub(TextualInversionLoaderMixin):
        hf_device_map = None

        def __init__(self):
            if not hasattr(model, "text_model"):
                # diffusers 0.42's clip skip reads text_encoder.text_model.final_layer_norm,
                # which transformers 5's CLIPTextModel holds at its top level: give it the
                # old path (outside torch's module registry, so no cycle) so diffusers'
                # own code runs unchanged
                old_path = types.SimpleNamespace(final_layer_norm=model.final_layer_norm)
                object.__setattr__(model, "text_model", old_path)
            self.tokenizer, self.text_encoder = hf_tokenizer, model
            self.components = {"tokenizer": hf_tokenizer, "text_encoder": model}

        def encode(self, prompt, negative=None, clip_skip=None):
            """diffusers' own prompt encoding: (positive, negative) (1, 77, C) arrays.
            diffusers' ``clip_skip`` is A1111's minus one, and applies to the prompt
            only: the negative prompt always takes the last layer."""
            with _require("torch").no_grad():
                positive, negative = diffusers.StableDiffusionPipeline.encode_prompt(
                    self, prompt, "cpu", 1, negative is not None, negative, clip_skip=clip_skip
                )
            return positive.numpy(), None if negative is None else negative.numpy()

    return Stub()


@pytest.fixture(scope="module")
def deep(tiny_pipeline):
    """A 4-layer text encoder: transformers' model and sdgen's backend on its weights."""
    model = _clip_text_model(DEEP, seed=11)
    encoder = _keras_text_encoder(model, "sd-v1", DEEP)
    p = tiny_pipeline
    backend = TensorFlowBackend(p.spec, encoder, p.diffusion_model, p.decoder, DeviceSettings())
    return model, backend


CLIP_SKIP_PROMPTS = [
    ("", "a photo of a cat"),
    ("lowres, watermark", "the old lighthouse on a cliff, " * 15 + "at dusk"),  # 2 chunks
]


@pytest.mark.reference
def test_clip_skip_gives_transformers_final_layer_norm_of_hidden_states_minus_n(deep, tokenizer):
    torch = _require("torch")
    model, backend = deep
    layers = DEEP.text_layers
    for negative, prompt in CLIP_SKIP_PROMPTS:
        chunks = prompt_chunks(tokenizer, negative, prompt)
        start, end = tokenizer.start_of_text, tokenizer.end_of_text
        ids = np.concatenate([c.token_ids(start, end, END_OF_TEXT) for c in chunks])
        with torch.no_grad():
            output = model(
                input_ids=torch.from_numpy(ids.astype(np.int64)), output_hidden_states=True
            )
            hidden = output.hidden_states
            assert len(hidden) == layers + 1  # the embeddings, then each layer
            expected = {
                n: _final_layer_norm(model)(hidden[-n]).numpy() for n in range(1, layers + 1)
            }
        np.testing.assert_allclose(expected[1], output.last_hidden_state.numpy(), atol=1e-6)
        for n in range(1, layers + 1):
            got = encode_conditioning(
                tokenizer, backend.encode, negative, prompt, options=TextOptions(clip_skip=n)
            )
            states = np.concatenate([got.negative, got.positive], axis=1).reshape((*ids.shape, -1))
            error = float(np.abs(states - expected[n]).max())
            assert error <= LIMIT, (prompt, n, error)
            if n > 1:  # each layer is another: the check can tell them apart
                assert np.abs(expected[n] - expected[n - 1]).max() > 100 * LIMIT
        # the text-states model itself at clip skip 1 (the plain encoder serves it above)
        from sdgen.networks.text_states import text_states_on_layers

        states_model = text_states_on_layers(backend.text_encoder, 1)
        zeros = np.zeros((*ids.shape, DEEP.text), np.float32)
        positions = np.tile(np.arange(77, dtype=np.int32), (len(ids), 1))
        mask = np.zeros((*ids.shape, 1), np.float32)
        got = states_model.predict_on_batch([ids, positions, zeros, mask])
        assert float(np.abs(got - expected[1]).max()) <= LIMIT


@pytest.mark.reference
def test_clip_skip_n_is_diffusers_clip_skip_n_minus_1(deep, tokenizer):
    model, backend = deep
    stub = _diffusers_stub(_hf_tokenizer(tokenizer), model)
    prompt = "a photo of a cat, highly detailed"
    for n in range(1, DEEP.text_layers + 1):
        theirs, _ = stub.encode(prompt, clip_skip=None if n == 1 else n - 1)
        ours = encode_conditioning(
            tokenizer, backend.encode, "", prompt, options=TextOptions(clip_skip=n)
        )
        assert float(np.abs(ours.positive - theirs).max()) <= LIMIT, n


#: (prompt embedding: format, vectors), (negative embedding: format, vectors)
TI_CASES = {
    "pt-3-vectors+diffusers-1": (("pt", 3), ("diffusers", 1)),
    "diffusers-3-vectors+pt-1": (("diffusers", 3), ("pt", 1)),
}


@pytest.fixture(scope="module")
def tiny_text(tiny_pipeline):
    """tiny's own text encoder layout (64 wide, 2 layers) with transformers' random
    weights, converted by the tiny family's tables, in a pipeline of tiny's."""
    model = _clip_text_model(TINY_WIDTHS, seed=5)
    encoder = _keras_text_encoder(model, "tiny", TINY_WIDTHS)
    p = tiny_pipeline
    return model, Pipeline(p.spec, p.tokenizer, encoder, p.diffusion_model, p.decoder)


@pytest.mark.reference
@pytest.mark.parametrize("case", TI_CASES)
@pytest.mark.parametrize("clip_skip", [1, 2])
def test_textual_inversion_gives_diffusers_load_textual_inversion_states(
    tiny_text, tokenizer, tmp_path, case, clip_skip
):
    (style_form, style_n), (negative_form, negative_n) = TI_CASES[case]
    rng = np.random.default_rng(7)
    style = rng.standard_normal((style_n, 64)).astype(np.float32)
    bad = rng.standard_normal((negative_n, 64)).astype(np.float32)
    paths = _write_embeddings(
        tmp_path / "embeddings",
        {"lumastyle": (style_form, style), "badhandsneg": (negative_form, bad)},
    )
    prompt = "a portrait in lumastyle, highly detailed, soft light"
    negative = "badhandsneg, blurry"

    model, pipeline = tiny_text
    pipeline.embeddings = EmbeddingLibrary(tmp_path / "embeddings")
    ours = pipeline.encode(negative, prompt, TextOptions(clip_skip=clip_skip))
    pipeline.embeddings = None

    # a copy: diffusers adds the embeddings to the text encoder's token table
    stub = _diffusers_stub(_hf_tokenizer(tokenizer), copy.deepcopy(model))
    stub.load_textual_inversion(
        [str(paths["lumastyle"]), str(paths["badhandsneg"])], token=["lumastyle", "badhandsneg"]
    )
    positive, unconditional = stub.encode(
        prompt, negative, clip_skip=None if clip_skip == 1 else clip_skip - 1
    )
    # diffusers' tokens are sdgen's, with its new token ids where sdgen puts the vectors
    ids = stub.tokenizer(stub.maybe_convert_prompt(prompt, stub.tokenizer)).input_ids
    library = EmbeddingLibrary(tmp_path / "embeddings")
    (chunk,) = prompt_chunks(tokenizer, "", prompt, embeddings=library, width=64)[1].chunks
    assert len(ids) == len(chunk) + 2
    new = set(stub.tokenizer.convert_tokens_to_ids(["lumastyle", "lumastyle_1", "lumastyle_2"]))
    for slot, token in zip(chunk, ids[1:-1], strict=True):
        assert token in new if slot.embedding else token == slot.token

    assert float(np.abs(ours.positive - positive).max()) <= LIMIT
    if clip_skip == 1:  # diffusers applies clip skip to the prompt only
        assert float(np.abs(ours.negative - unconditional).max()) <= LIMIT
    # the check can fail: without the embeddings the states are another's
    plain = pipeline.encode(negative, prompt, TextOptions(clip_skip=clip_skip))
    assert np.abs(plain.positive - positive).max() > 100 * LIMIT
