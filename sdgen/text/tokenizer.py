"""CLIP tokenization with the BPE vocabulary shipped in ``sdgen/data`` (never downloaded)."""

from __future__ import annotations

import gzip
import html
import itertools
from functools import cache
from pathlib import Path

import regex

#: The BPE vocabulary of OpenAI's CLIP (MIT licence, see the .LICENSE.txt beside it).
VOCABULARY_PATH = Path(__file__).parent.parent / "data" / "bpe_simple_vocab_16e6.txt.gz"
MAX_PROMPT_LENGTH = 77
END_OF_TEXT = 49407


#: Words are split as CLIP splits them: the special tokens, English contractions, runs of
#: letters, single digits, and runs of anything else that is not a space.
_WORDS = regex.compile(
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+",
    regex.IGNORECASE,
)
#: How many lines of the vocabulary file are merges (after its header line).
_MERGES = 49152 - 256 - 2


def _byte_symbols() -> tuple[dict[int, str], list[int]]:
    """CLIP's byte-level alphabet: each byte as a printable character (printable Latin-1
    bytes stand for themselves, the others are moved to U+0100 onwards), and the byte
    order of the first 256 vocabulary entries (printable bytes first)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    others = [b for b in range(256) if b not in set(printable)]
    symbols = {b: chr(b) for b in printable}
    symbols.update({b: chr(256 + n) for n, b in enumerate(others)})
    return symbols, printable + others


class ClipTokenizer:
    """CLIP's byte-level BPE tokenizer (the one SD's text encoders were trained with).

    ``encode(text)`` gives start-of-text, the tokens, end-of-text: the ids keras_cv's
    ``SimpleTokenizer`` and OpenAI's CLIP give (the tests compare them), without importing
    TensorFlow.
    """

    def __init__(self, vocabulary_path: Path = VOCABULARY_PATH):
        with gzip.open(vocabulary_path, "rt", encoding="utf-8") as handle:
            lines = handle.read().split("\n")
        merges = [tuple(line.split()) for line in lines[1 : _MERGES + 1]]
        self._symbols, order = _byte_symbols()
        base = [self._symbols[b] for b in order]
        vocabulary = [*base, *(s + "</w>" for s in base), *("".join(m) for m in merges)]
        vocabulary += ["<|startoftext|>", "<|endoftext|>"]
        self.ids = {token: i for i, token in enumerate(vocabulary)}
        self._ranks = {merge: rank for rank, merge in enumerate(merges)}
        self._words: dict[str, list[str]] = {}
        self.start_of_text = self.ids["<|startoftext|>"]
        self.end_of_text = self.ids["<|endoftext|>"]
        self.comma = self.ids[",</w>"]
        self._texts: dict[int, str] | None = None
        self._bytes: dict[str, int] = {}

    def encode(self, text: str) -> list[int]:
        """Start-of-text, the tokens of ``text``, end-of-text."""
        return [self.start_of_text, *self.tokens(text), self.end_of_text]

    def tokens(self, text: str) -> list[int]:
        """The token ids of ``text`` alone, without start and end markers (how A1111
        tokenises each fragment of a weighted prompt)."""
        text = html.unescape(html.unescape(text)).strip()
        text = regex.sub(r"\s+", " ", text).strip().lower()
        ids = []
        for word in _WORDS.findall(text):
            if word in ("<|startoftext|>", "<|endoftext|>"):
                ids.append(self.ids[word])
                continue
            symbols = "".join(self._symbols[b] for b in word.encode("utf-8"))
            ids.extend(self.ids[piece] for piece in self._pieces(symbols))
        return ids

    def token_text(self, token: int) -> str:
        """What token id ``token`` spells, as readable text: ``cat</w>`` is ``cat`` and
        the word end (``</w>``) is kept as a trailing space, so tokens join back up."""
        if self._texts is None:
            self._texts = {i: token for token, i in self.ids.items()}
            self._bytes = {symbol: b for b, symbol in self._symbols.items()}
        piece = self._texts.get(int(token), "")
        end = piece.endswith("</w>")
        piece = piece.removesuffix("</w>")
        if piece in ("<|startoftext|>", "<|endoftext|>"):
            return piece
        raw = bytes(self._bytes[c] for c in piece if c in self._bytes)
        return raw.decode("utf-8", errors="replace") + (" " if end else "")

    def _pieces(self, word: str) -> list[str]:
        """``word`` merged by BPE: the lowest-ranked adjacent pair first, until none
        of the pairs left is a merge. The last symbol carries the end-of-word mark."""
        if word not in self._words:
            parts = [*word[:-1], word[-1] + "</w>"]
            while len(parts) > 1:
                pairs = set(itertools.pairwise(parts))
                best = min(pairs, key=lambda pair: self._ranks.get(pair, len(self._ranks)))
                if best not in self._ranks:
                    break
                merged, i = [], 0
                while i < len(parts):
                    if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                        merged.append(parts[i] + parts[i + 1])
                        i += 2
                    else:
                        merged.append(parts[i])
                        i += 1
                parts = merged
            self._words[word] = parts
        return self._words[word]


@cache
def load_tokenizer() -> ClipTokenizer:
    """The CLIP tokenizer with sdgen's bundled vocabulary."""
    return ClipTokenizer()
