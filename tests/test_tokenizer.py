"""sdgen's CLIP tokenizer gives the ids keras_cv's SimpleTokenizer gives, without TF."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from sdgen.text.tokenizer import VOCABULARY_PATH, ClipTokenizer, load_tokenizer

PROMPTS = [
    "photograph of an astronaut riding a horse",
    "A Cat's   \t hat\n& <b>bold</b> &amp;amp; isn't",
    "Ünïcödé café naïve 東京 タワー 🚀🔥 ✨",
    "1234567890 3.14 x^2 <|endoftext|> <|STARTOFTEXT|>",
    "",
    "   ",
    "a\x1c b\u00a0c\u2003d\u200b e",
    "((masterpiece)), [best quality:1.2], ultra-detailed, 8k",
    "ŁÓDŹ Straße ΑΒΓ абв don't we'll I'M they've",
    "a" * 200,
]


def fuzzed_prompts(count=300, seed=0):
    rng = random.Random(seed)
    alphabet = [chr(c) for c in [*range(32, 127), *range(160, 1200)]]
    alphabet += ["\u4e00", "\u3042", "\U0001f600", "\u200b", "\u00a0", "\u2028", "\t", "\n"]
    return ["".join(rng.choices(alphabet, k=rng.randint(1, 60))) for _ in range(count)]


@pytest.mark.parametrize("batch", ["written", "fuzzed"])
def test_ids_match_keras_cv_simple_tokenizer(batch):
    from keras_cv.models.stable_diffusion import SimpleTokenizer

    theirs = SimpleTokenizer(bpe_path=str(VOCABULARY_PATH))
    ours = ClipTokenizer()
    prompts = PROMPTS if batch == "written" else fuzzed_prompts()
    for prompt in prompts:
        assert ours.encode(prompt) == theirs.encode(prompt), prompt


def test_known_ids():
    ids = load_tokenizer().encode("a photograph of an astronaut")
    assert ids[0] == 49406 and ids[-1] == 49407
    assert ids[1:-1] == [320, 8853, 539, 550, 18376]


def test_loading_the_tokenizer_does_not_import_tensorflow():
    code = (
        "import sys; from sdgen.text.tokenizer import load_tokenizer; "
        "load_tokenizer().encode('a cat'); print('tensorflow' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
