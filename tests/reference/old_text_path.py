"""The text path as it was before prompts were chunked (sdgen 0.1.0): one prompt of at most
77 tokens, start and end markers included, padded to 77. The tests compare today's text
stage against it, to show a plain prompt is still encoded bit for bit as it was."""

from __future__ import annotations

import numpy as np

from sdgen.errors import PromptError
from sdgen.text.tokenizer import END_OF_TEXT, MAX_PROMPT_LENGTH


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
