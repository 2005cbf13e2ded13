"""CLIP tokenization with the BPE vocabulary shipped in ``sdgen/data`` (never downloaded)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np

from .errors import PromptError

#: The BPE vocabulary of OpenAI's CLIP (MIT licence, see the .LICENSE.txt beside it).
VOCABULARY_PATH = Path(__file__).parent / "data" / "bpe_simple_vocab_16e6.txt.gz"
MAX_PROMPT_LENGTH = 77
END_OF_TEXT = 49407


@cache
def load_tokenizer():
    """keras_cv's ``SimpleTokenizer`` given sdgen's bundled vocabulary."""
    from keras_cv.models.stable_diffusion import SimpleTokenizer

    return SimpleTokenizer(bpe_path=str(VOCABULARY_PATH))


def encode_prompt(
    tokenizer, prompt: str, what: str = "prompt", pad: int = END_OF_TEXT
) -> np.ndarray:
    """Token ids of ``prompt`` padded to 77 with ``pad``: end-of-text as keras_cv and SD
    1.x's CLIP tokenizer pad, or 0 for SD 2.x, whose OpenCLIP tokenizer pads with 0.

    A prompt longer than CLIP's 77 tokens (start and end markers included) is refused
    with its token count rather than silently truncated, because truncation drops the
    end of the prompt that the user wrote on purpose.
    """
    ids = tokenizer.encode(prompt)
    if len(ids) > MAX_PROMPT_LENGTH:
        raise PromptError(
            f"{what} is {len(ids)} CLIP tokens long, more than the {MAX_PROMPT_LENGTH} the "
            f"text encoder takes (start and end markers included); shorten it by "
            f"{len(ids) - MAX_PROMPT_LENGTH} tokens"
        )
    return np.array(ids + [pad] * (MAX_PROMPT_LENGTH - len(ids)), dtype=np.int32)
