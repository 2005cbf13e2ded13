"""The text stage: prompts -> one ``Conditioning`` value that denoising is guided by.

Like diffusers' ``prompt_embeds`` / ``negative_prompt_embeds``, the negative and the
positive text states travel together but keep their own token lengths, so a long
prompt (several 77-token chunks) and a short negative prompt can later meet in one
generation; the pipeline then calls the U-Net once per half, or a fused call over both
contexts repeated to a common length (see :mod:`sdgen.pipeline.guidance`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from .chunks import EmbeddingSource, PromptChunks, chunk_prompt
from .lora_tags import strip_lora_tags
from .prompt_syntax import DEFAULT_EMPHASIS
from .tokenizer import END_OF_TEXT, MAX_PROMPT_LENGTH
from .weighting import weigh

#: ``encode(tokens (N, 77) int32, positions (N, 77) int32, *, clip_skip=1, vectors=None,
#: mask=None) -> states (N, 77, C)``: see ``sdgen.runtimes.base.Backend.encode``.
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


@dataclass(frozen=True)
class TextOptions:
    """How prompts are read and encoded.

    emphasis: one of ``prompt_syntax.EMPHASIS_MODES`` ["original"].
    clip_skip: A1111's "Clip skip": 1 takes the text encoder's last layer, 2 the one
        before it (through the final layer norm), and so on [1].
    """

    emphasis: str = DEFAULT_EMPHASIS
    clip_skip: int = 1


def prompt_chunks(
    tokenizer,
    negative_prompt: str,
    prompt: str,
    options: TextOptions | None = None,
    embeddings: EmbeddingSource | None = None,
    width: int | None = None,
) -> tuple[PromptChunks, PromptChunks]:
    """Both prompts cut into chunks (see :mod:`.chunks`): negative, positive. Their
    ``<lora:...>`` tags are removed first (:mod:`.lora_tags`): the text encoder never
    sees them, as in A1111."""
    options = options or TextOptions()
    negative_prompt, prompt = strip_lora_tags(negative_prompt), strip_lora_tags(prompt)
    return (
        chunk_prompt(tokenizer, negative_prompt, options.emphasis, embeddings, width),
        chunk_prompt(tokenizer, prompt, options.emphasis, embeddings, width),
    )


def encode_conditioning(
    tokenizer,
    encode: Encode,
    negative_prompt: str,
    prompt: str,
    pad: int = END_OF_TEXT,
    options: TextOptions | None = None,
    embeddings: EmbeddingSource | None = None,
    width: int | None = None,
) -> Conditioning:
    """Both prompts' text states: chunked, encoded in one batch (the negative prompt's
    chunks first), weighted, and each prompt's chunks joined on the token axis.

    ``encode`` gets the ``clip_skip`` and the embedding ``vectors``/``mask`` keywords
    only when they are needed; a prompt and a negative prompt of one chunk each, with no
    embedding and at clip skip 1, are encoded exactly as keras_cv encodes them: one
    batch of two rows, so the states stay bit for bit what they were.
    """
    options = options or TextOptions()
    negative, positive = prompt_chunks(
        tokenizer, negative_prompt, prompt, options, embeddings, width
    )
    start, end = tokenizer.start_of_text, tokenizer.end_of_text
    tokens = np.concatenate(
        [negative.token_ids(start, end, pad), positive.token_ids(start, end, pad)]
    )
    positions = np.tile(np.arange(MAX_PROMPT_LENGTH, dtype=np.int32), (len(tokens), 1))
    extra: dict = {}
    if options.clip_skip != 1:
        extra["clip_skip"] = options.clip_skip
    if negative.embeddings or positive.embeddings:
        inserted = [chunks.vectors(width) for chunks in (negative, positive)]
        extra["vectors"] = np.concatenate([vectors for vectors, _ in inserted])
        extra["mask"] = np.concatenate([mask for _, mask in inserted])
    states = np.asarray(encode(tokens, positions, **extra), dtype=np.float32)
    split = len(negative.chunks)
    rows = []
    for chunks, chunk_states in ((negative, states[:split]), (positive, states[split:])):
        weighted = weigh(chunk_states, chunks.weights(), options.emphasis)
        rows.append(weighted.reshape(1, -1, weighted.shape[-1]))
    return Conditioning(negative=rows[0], positive=rows[1])


__all__ = ["Conditioning", "TextOptions", "encode_conditioning", "prompt_chunks"]
