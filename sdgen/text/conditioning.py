"""The text stage: prompts -> one ``Conditioning`` value that denoising is guided by.

Like diffusers' ``prompt_embeds`` / ``negative_prompt_embeds``, the negative and the
positive text states travel together but keep their own token lengths, so a long
prompt (several 77-token chunks) and a short negative prompt can later meet in one
generation; the pipeline then calls the U-Net once per half (see
:mod:`sdgen.pipeline.guidance`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from .tokenizer import END_OF_TEXT, MAX_PROMPT_LENGTH, encode_prompt

#: ``encode(tokens (N, 77) int32, positions (N, 77) int32) -> states (N, 77, C)``
Encode = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True, eq=False)
class Conditioning:
    """The text states denoising is guided by.

    negative: (1, L_negative, C) float32, the negative prompt's states (the
        "unconditional" row of classifier-free guidance).
    positive: (1, L_positive, C) float32, the prompt's states.
    """

    negative: np.ndarray
    positive: np.ndarray

    def __post_init__(self):
        for name in ("negative", "positive"):
            states = getattr(self, name)
            if states.ndim != 3 or states.shape[0] != 1:
                raise ConfigError(f"{name} text states must be (1, L, C), got {states.shape}")
        if self.negative.shape[2] != self.positive.shape[2]:
            raise ConfigError(
                f"negative and positive text states differ in width: "
                f"{self.negative.shape[2]} and {self.positive.shape[2]}"
            )

    @property
    def negative_length(self) -> int:
        return int(self.negative.shape[1])

    @property
    def positive_length(self) -> int:
        return int(self.positive.shape[1])

    @property
    def width(self) -> int:
        """C: the text encoder's width (768 for SD 1, 1024 for SD 2)."""
        return int(self.positive.shape[2])


def encode_conditioning(
    tokenizer, encode: Encode, negative_prompt: str, prompt: str, pad: int = END_OF_TEXT
) -> Conditioning:
    """Tokenize both prompts (``PromptError`` past 77 tokens) and encode them in one
    batch of two rows, negative first, as keras_cv does: the text encoder's reductions
    sum in another order for a batch of one, so this keeps today's states bit for bit."""
    tokens = np.stack(
        [
            encode_prompt(tokenizer, negative_prompt, "negative prompt", pad),
            encode_prompt(tokenizer, prompt, pad=pad),
        ]
    )
    positions = np.tile(np.arange(MAX_PROMPT_LENGTH, dtype=np.int32), (2, 1))
    states = np.asarray(encode(tokens, positions), dtype=np.float32)
    return Conditioning(negative=states[:1], positive=states[1:])


__all__ = ["Conditioning", "encode_conditioning"]
