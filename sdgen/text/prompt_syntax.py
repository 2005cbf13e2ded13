"""AUTOMATIC1111's prompt syntax: ``(emphasis)``, ``[de-emphasis]``, ``(text:1.3)``, ``BREAK``.

``parse_emphasis`` turns a prompt into fragments of text, each with the weight its
brackets give it, following the rules of A1111's ``parse_prompt_attention`` (written
from its documented behaviour; see ``../shared/PROMPTS.md``):

- ``(text)`` multiplies the weight by 1.1, ``[text]`` divides it by 1.1, ``(text:1.3)``
  multiplies it by 1.3 instead; nesting multiplies. Weights are not clamped and may be
  negative.
- ``\\(``, ``\\)``, ``\\[``, ``\\]`` and ``\\\\`` are the literal characters.
- A bracket left open closes at the end of the prompt; a closing bracket with nothing
  open is plain text, and so is a colon not followed by a number and ``)``: in
  ``(cat:abc)`` the ``:abc`` is text inside a 1.1 group.
- ``BREAK`` (a whole word, in capitals) ends the current 75-token chunk.
- Neighbouring fragments of equal weight are merged.

One deliberate difference: A1111 marks a ``BREAK`` with a fragment of weight -1, which a
bracket around it multiplies into something no longer recognised, so ``(a BREAK b)``
there sends the word "BREAK" to CLIP with weight -1.1. Here a ``BREAK`` is never
weighted: it breaks wherever it stands.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: The emphasis modes of ``--emphasis``, as A1111's "Emphasis" setting names them:
#: "original" (the default: weights, then the chunk's mean restored), "no-norm" (weights
#: only), "ignore" (brackets parsed, weights dropped), "off" (no syntax at all: brackets,
#: escapes and BREAK are plain text, as in keras_cv and sdgen before 0.x).
EMPHASIS_MODES = ("original", "no-norm", "ignore", "off")
DEFAULT_EMPHASIS = "original"
#: A1111's names of the modes, as its infotext writes them (``Emphasis: No norm``).
EMPHASIS_LABELS = {"original": "Original", "no-norm": "No norm", "ignore": "Ignore", "off": "None"}

UP = 1.1
DOWN = 1 / 1.1

#: One piece of the syntax: an escape, an opening or closing bracket, a ``:number)``
#: weight, a run of plain text, or a lone colon or backslash.
_PIECE = re.compile(
    r"\\[()\[\]\\]|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|\]|[^\\()\[\]:]+|:",
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*")


@dataclass(frozen=True)
class Fragment:
    """A piece of prompt text and its weight; ``is_break`` marks a ``BREAK``."""

    text: str
    weight: float = 1.0
    is_break: bool = False


BREAK = Fragment("BREAK", 1.0, is_break=True)


def parse_emphasis(text: str) -> list[Fragment]:
    """The fragments of ``text`` with their weights (see the module docstring).

    >>> [(f.text, round(f.weight, 4)) for f in parse_emphasis("an (important) word")]
    [('an ', 1.0), ('important', 1.1), (' word', 1.0)]
    """
    parser = _Parser()
    for match in _PIECE.finditer(text):
        parser.feed(match.group(0), match.group(1))
    return parser.finish()


class _Parser:
    """The pieces' texts and weights so far, and where each open bracket began."""

    def __init__(self):
        self.texts: list[str] = []
        self.weights: list[float] = []
        self.breaks: set[int] = set()
        self.round_open: list[int] = []
        self.square_open: list[int] = []

    def feed(self, piece: str, number: str | None) -> None:
        if piece.startswith("\\"):
            self._add(piece[1:])
        elif piece == "(":
            self.round_open.append(len(self.texts))
        elif piece == "[":
            self.square_open.append(len(self.texts))
        elif number is not None and self.round_open and _is_number(number):
            self._multiply(self.round_open.pop(), float(number))
        elif piece == ")" and self.round_open:
            self._multiply(self.round_open.pop(), UP)
        elif piece == "]" and self.square_open:
            self._multiply(self.square_open.pop(), DOWN)
        else:
            for n, part in enumerate(_BREAK.split(piece)):
                if n:
                    self.breaks.add(len(self.texts))
                    self._add("BREAK")
                self._add(part)

    def finish(self) -> list[Fragment]:
        for start in self.round_open:
            self._multiply(start, UP)
        for start in self.square_open:
            self._multiply(start, DOWN)
        return _merged(self.texts, self.weights, self.breaks)

    def _add(self, piece: str) -> None:
        self.texts.append(piece)
        self.weights.append(1.0)

    def _multiply(self, start: int, factor: float) -> None:
        for i in range(start, len(self.weights)):
            self.weights[i] *= factor


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:  # "1.2.3" matches [.\d]+ but is no number: plain text then
        return False
    return True


def _merged(texts: list[str], weights: list[float], breaks: set[int]) -> list[Fragment]:
    fragments: list[Fragment] = []
    for i, (piece, weight) in enumerate(zip(texts, weights, strict=True)):
        if i in breaks:
            fragments.append(BREAK)
        elif fragments and not fragments[-1].is_break and fragments[-1].weight == weight:
            fragments[-1] = Fragment(fragments[-1].text + piece, weight)
        else:
            fragments.append(Fragment(piece, weight))
    return fragments or [Fragment("", 1.0)]


def fragments_for(text: str, emphasis: str) -> list[Fragment]:
    """The fragments CLIP is given for ``text`` under ``emphasis``: parsed, with the
    weights dropped for "ignore", or the whole text at weight 1 for "off"."""
    if emphasis == "off":
        return [Fragment(text, 1.0)]
    fragments = parse_emphasis(text)
    if emphasis == "ignore":
        return [f if f.is_break else Fragment(f.text, 1.0) for f in fragments]
    return fragments


def uses_syntax(text: str) -> bool:
    """Whether ``text`` means anything different under the syntax than as plain text:
    False when it parses to itself, at weight 1, without a BREAK."""
    fragments = parse_emphasis(text)
    return not (len(fragments) == 1 and fragments[0] == Fragment(text, 1.0))


__all__ = [
    "BREAK",
    "DEFAULT_EMPHASIS",
    "EMPHASIS_LABELS",
    "EMPHASIS_MODES",
    "Fragment",
    "fragments_for",
    "parse_emphasis",
    "uses_syntax",
]
