"""Prompts of any length: fragments -> CLIP tokens -> chunks of 75, as A1111 cuts them.

CLIP's text encoder reads 77 tokens: a start marker, 75 tokens and an end marker. A
longer prompt is cut into chunks of 75 that are encoded one by one and joined on the
token axis (a context of 77·k tokens); the U-Net attends to all of them. The rules are
A1111's (``tokenize_line`` in its ``sd_hijack_clip.py``, read for facts; see
``../shared/PROMPTS.md``):

- each weighted fragment is tokenised on its own, and every token keeps its weight;
- **comma backtrack**: when a chunk is full and its last comma is at most 20 tokens
  back, the tokens after that comma move on to the next chunk, so a phrase is not cut
  in two;
- ``BREAK`` closes the current chunk;
- a textual-inversion embedding takes one slot per vector, with its fragment's weight,
  and never straddles two chunks: if it does not fit, it starts the next one;
- padding is the end token (SD 1.x) or 0 (SD 2.x's OpenCLIP), with weight 1.

One deliberate difference: when the comma backtrack moves an embedding's slots to the
next chunk, A1111 leaves its vectors at the old positions (in the padding); here the
vectors move with their slots.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ..errors import PromptError
from .prompt_syntax import fragments_for

#: Tokens per chunk between its start and end markers.
CHUNK_TOKENS = 75
#: A1111's ``comma_padding_backtrack``: how far back a comma may be to move a chunk's
#: last words on to the next chunk.
COMMA_BACKTRACK = 20


class EmbeddingSource(Protocol):
    """Where embeddings come from (``sdgen.adapters.textual_inversion.EmbeddingLibrary``)."""

    def find(self, text: str) -> list: ...  # EmbeddingMatch(start, end, name), in order

    def load(self, name: str, width: int | None = None): ...  # Embedding(vectors (n, C), ...)


@dataclass(frozen=True)
class Slot:
    """One of a chunk's token positions: a CLIP token id (0 where an embedding's vector
    stands), its weight, and which embedding vector it holds, if any."""

    token: int
    weight: float
    embedding: str | None = None
    vector: int = 0


@dataclass(frozen=True, eq=False)
class PromptChunks:
    """A prompt cut into chunks: each a tuple of at most 75 ``Slot``s.

    token_count: A1111's count, shown as ``n/75``: 75 per chunk before the last, plus
        the last one's slots.
    embeddings: the embeddings the prompt uses, by name (their ``vectors`` are (n, C)).
    """

    chunks: tuple[tuple[Slot, ...], ...]
    token_count: int
    embeddings: Mapping[str, object] = field(default_factory=dict)

    @property
    def context_length(self) -> int:
        """Tokens in the encoded prompt: 77 per chunk."""
        return len(self.chunks) * (CHUNK_TOKENS + 2)

    @property
    def counted(self) -> str:
        """``n/75``, ``n/150``, ...: the count against the room of its chunks, as A1111
        shows it."""
        return f"{self.token_count}/{CHUNK_TOKENS * len(self.chunks)}"

    def token_ids(self, start: int, end: int, pad: int) -> np.ndarray:
        """(k, 77) int32: each chunk as ``start, slots, end, pad...``."""
        rows = []
        for chunk in self.chunks:
            tokens = [start, *(slot.token for slot in chunk), end]
            rows.append(tokens + [pad] * (CHUNK_TOKENS + 2 - len(tokens)))
        return np.array(rows, dtype=np.int32)

    def weights(self) -> np.ndarray:
        """(k, 77) float32: each slot's weight; 1 at the markers and the padding."""
        rows = []
        for chunk in self.chunks:
            weights = [1.0, *(slot.weight for slot in chunk)]
            rows.append(weights + [1.0] * (CHUNK_TOKENS + 2 - len(weights)))
        return np.array(rows, dtype=np.float32)

    def vectors(self, width: int) -> tuple[np.ndarray, np.ndarray]:
        """``(vectors (k, 77, width) float32, mask (k, 77) bool)``: the embedding vectors
        to put in place of the token embeddings where ``mask`` is set (nowhere when the
        prompt uses no embedding)."""
        vectors = np.zeros((len(self.chunks), CHUNK_TOKENS + 2, width), np.float32)
        mask = np.zeros((len(self.chunks), CHUNK_TOKENS + 2), bool)
        for row, chunk in enumerate(self.chunks):
            for position, slot in enumerate(chunk, start=1):
                if slot.embedding is not None:
                    vectors[row, position] = self.embeddings[slot.embedding].vectors[slot.vector]
                    mask[row, position] = True
        return vectors, mask


class _Chunker:
    """Walks weighted tokens and embeddings into chunks (see the module docstring)."""

    def __init__(self, comma: int):
        self.comma = comma
        self.chunks: list[tuple[Slot, ...]] = []
        self.current: list[Slot] = []
        self.last_comma = -1
        self.count = 0

    def close(self, last: bool = False) -> None:
        self.count += len(self.current) if last else CHUNK_TOKENS
        self.chunks.append(tuple(self.current))
        self.current = []
        self.last_comma = -1

    def _make_room(self, token: int | None) -> None:
        """Before a token (None: an embedding) is added: the comma backtrack, and a new
        chunk when this one is full."""
        if token == self.comma:
            self.last_comma = len(self.current)
        elif (
            len(self.current) == CHUNK_TOKENS
            and self.last_comma != -1
            and CHUNK_TOKENS - self.last_comma <= COMMA_BACKTRACK
        ):
            moved = self.current[self.last_comma + 1 :]
            self.current = self.current[: self.last_comma + 1]
            self.close()
            self.current = moved
        if len(self.current) == CHUNK_TOKENS:
            self.close()

    def add_token(self, token: int, weight: float) -> None:
        self._make_room(token)
        self.current.append(Slot(token, weight))

    def add_embedding(self, name: str, vectors: int, weight: float) -> None:
        self._make_room(None)
        if len(self.current) + vectors > CHUNK_TOKENS:
            self.close()
        self.current.extend(Slot(0, weight, name, i) for i in range(vectors))

    def finish(self) -> tuple[tuple[tuple[Slot, ...], ...], int]:
        if self.current or not self.chunks:
            self.close(last=True)
        return tuple(self.chunks), self.count


def chunk_prompt(
    tokenizer,
    text: str,
    emphasis: str = "original",
    embeddings: EmbeddingSource | None = None,
    width: int | None = None,
) -> PromptChunks:
    """``text`` cut into chunks under ``emphasis`` (see ``prompt_syntax.EMPHASIS_MODES``).

    embeddings: the library whose names are looked up in the text (None: no textual
        inversion); ``width``: the text encoder's, which each embedding used must match.
    """
    chunker = _Chunker(tokenizer.comma)
    used: dict[str, object] = {}
    for fragment in fragments_for(text, emphasis):
        if fragment.is_break:
            chunker.close()
            continue
        for piece, name in _pieces(fragment.text, embeddings):
            if name is None:
                for token in tokenizer.tokens(piece):
                    chunker.add_token(token, fragment.weight)
                continue
            if name not in used:
                used[name] = embeddings.load(name, width)
            count = len(used[name].vectors)
            if count > CHUNK_TOKENS:
                raise PromptError(
                    f"embedding {name} has {count} vectors, more than the {CHUNK_TOKENS} "
                    "tokens of a chunk"
                )
            chunker.add_embedding(name, count, fragment.weight)
    chunks, count = chunker.finish()
    return PromptChunks(chunks, count, used)


def _pieces(text: str, embeddings: EmbeddingSource | None) -> list[tuple[str, str | None]]:
    """``text`` split around the embedding names in it: ``(text, None)`` and
    ``("", name)`` pieces, in order."""
    matches = embeddings.find(text) if embeddings is not None else []
    pieces, position = [], 0
    for match in matches:
        pieces.append((text[position : match.start], None))
        pieces.append(("", match.name))
        position = match.end
    pieces.append((text[position:], None))
    return [piece for piece in pieces if piece[1] is not None or piece[0]]


__all__ = ["CHUNK_TOKENS", "COMMA_BACKTRACK", "PromptChunks", "Slot", "chunk_prompt"]
