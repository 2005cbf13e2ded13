"""Dynamic prompts and wildcards, read with the ``dynamicprompts`` package.

A template such as ``a {red|blue} __animal__`` stands for several prompts: ``{a|b}``
picks one of its options (``{2$$a|b|c}`` two of them), and ``__name__`` one line of
``name.txt`` in the wildcards folder (``__dir/name__``: ``dir/name.txt``; the lines may be
templates themselves). Three modes (``--prompt-mode``):

- ``plain``: the text is the prompt, braces and underscores included;
- ``random``: each image expands the template with a generator seeded by that image's
  seed, so the same seed always gives the same prompt (a resumed run makes the same
  images);
- ``combinatorial``: every expansion is a job of its own, in dynamicprompts' order
  (the first choice varies slowest), at most ``MAX_COMBINATIONS``.

Every problem is a ``DynamicPromptError`` raised before any image is made: a syntax
error, an unknown wildcard (every wildcard a template can reach is looked up, in every
branch, not only those one seed picks), a missing wildcards folder, too many
combinations. ``dynamicprompts`` is imported only when a template is read.
"""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from ..errors import DynamicPromptError
from ..paths import data_dir

PROMPT_MODES = ("plain", "random", "combinatorial")
DEFAULT_PROMPT_MODE = "plain"
#: The most prompts (prompt and negative prompt combined) one combinatorial template makes.
MAX_COMBINATIONS = 1000
#: How far past the limit the combinations are counted for the error message.
_COUNT_CAP = 10 * MAX_COMBINATIONS


def default_wildcards_dir() -> Path:
    """``$SDGEN_HOME/wildcards``, else ``$XDG_DATA_HOME/sdgen/wildcards``, else
    ``~/.local/share/sdgen/wildcards`` (beside the model store and the embeddings)."""
    return data_dir("wildcards")


def check_prompt_mode(mode: str) -> str:
    if mode not in PROMPT_MODES:
        raise DynamicPromptError(
            f"unknown prompt mode {mode!r}; choose one of: {', '.join(PROMPT_MODES)}"
        )
    return mode


@dataclass(frozen=True)
class PromptTemplate:
    """The dynamic prompt a job's text comes from (plain data: it travels with the job).

    prompt, negative_prompt: the templates as written.
    mode: ``"random"`` or ``"combinatorial"``.
    wildcards: ``(name, sha256)`` of every wildcard the templates can reach, its lines'
        hash: a changed wildcard file is another template.
    per_image: a random template whose images have not expanded it yet (each with its
        own seed, when the batch is planned).
    """

    prompt: str
    negative_prompt: str
    mode: str
    wildcards: tuple[tuple[str, str], ...] = ()
    per_image: bool = False


@dataclass
class DynamicPrompts:
    """Expands templates in one ``mode`` with the wildcards of ``wildcards_dir``
    [``default_wildcards_dir()``]."""

    mode: str = DEFAULT_PROMPT_MODE
    wildcards_dir: Path | None = None
    _manager: object = field(default=None, repr=False)

    def __post_init__(self):
        check_prompt_mode(self.mode)
        if self.wildcards_dir is None:
            self.wildcards_dir = default_wildcards_dir()

    def template(self, prompt: str, negative_prompt: str = "") -> PromptTemplate | None:
        """The checked template of ``prompt`` and ``negative_prompt``, or None when they
        are plain text (or the mode is ``plain``)."""
        if self.mode == "plain":
            return None
        used: dict[str, str] = {}
        dynamic = False
        for text in (prompt, negative_prompt):
            if text:
                command = self._parse(text)
                dynamic |= not _is_literal(command, text)
                self._walk(command, used)
        if not dynamic:
            return None
        wildcards = tuple(sorted(used.items()))
        per_image = self.mode == "random"
        return PromptTemplate(prompt, negative_prompt, self.mode, wildcards, per_image)

    def combinations(self, template: PromptTemplate) -> list[tuple[str, str]]:
        """Every ``(prompt, negative_prompt)`` of ``template``, the prompt's choices
        varying slowest. Raises ``DynamicPromptError`` past ``MAX_COMBINATIONS``."""
        from dynamicprompts.generators import CombinatorialPromptGenerator

        generator = CombinatorialPromptGenerator(self._wildcard_manager())
        prompts = self._generate(lambda: generator.generate(template.prompt, _COUNT_CAP + 1))
        negatives = [""]
        if template.negative_prompt:
            negatives = self._generate(
                lambda: generator.generate(template.negative_prompt, _COUNT_CAP + 1)
            )
        count = len(prompts) * len(negatives)
        if count > MAX_COMBINATIONS:
            many = f"more than {_COUNT_CAP}" if count > _COUNT_CAP else str(count)
            raise DynamicPromptError(
                f"--prompt-mode combinatorial: {template.prompt!r} makes {many} prompts, "
                f"and at most {MAX_COMBINATIONS} are made; use fewer choices or "
                "--prompt-mode random"
            )
        return [(prompt, negative) for prompt in prompts for negative in negatives]

    def expand(self, template: PromptTemplate, seed: int) -> tuple[str, str]:
        """``(prompt, negative_prompt)`` of ``template`` for the image of ``seed``: the
        same seed gives the same prompts (both drawn from a generator seeded with it)."""
        from dynamicprompts.generators import RandomPromptGenerator

        def one(text: str) -> str:
            if not text:
                return text
            generator = RandomPromptGenerator(self._wildcard_manager(), seed=seed)
            return self._generate(lambda: generator.generate(text, 1))[0]

        return one(template.prompt), one(template.negative_prompt)

    def _parse(self, text: str):
        from dynamicprompts.parser.parse import parse

        try:
            return parse(text)
        except Exception as error:  # pyparsing's ParseException, or ValueError
            detail = " ".join(str(error).split())
            raise DynamicPromptError(f"cannot read the dynamic prompt {text!r}: {detail}") from None

    def _generate(self, make) -> list[str]:
        """``make()``'s prompts; a wildcard found missing while sampling (a name built
        from choices, ``__{a|b}__``) raises ``DynamicPromptError``."""
        try:
            return list(islice(make(), _COUNT_CAP + 1))
        except DynamicPromptError:
            raise
        except RecursionError:
            raise DynamicPromptError("a dynamic prompt refers to itself endlessly") from None
        except Exception as error:
            detail = " ".join(str(error).split())
            raise DynamicPromptError(f"cannot expand a dynamic prompt: {detail}") from None

    def _walk(self, command, used: dict[str, str]) -> None:
        """Look up every wildcard ``command`` can reach (recursively through wildcard
        files), recording each one's hash in ``used``."""
        from dynamicprompts.commands import (
            SequenceCommand,
            VariantCommand,
            WildcardCommand,
            WrapCommand,
        )
        from dynamicprompts.commands.variable_commands import (
            VariableAccessCommand,
            VariableAssignmentCommand,
        )

        if isinstance(command, WildcardCommand):
            if isinstance(command.wildcard, str):
                self._visit_wildcard(command.wildcard, used)
            else:  # a name made of choices: checked as it is sampled
                self._walk(command.wildcard, used)
            children = list(command.variables.values())
        elif isinstance(command, SequenceCommand):
            children = command.tokens
        elif isinstance(command, VariantCommand):
            children = [option.value for option in command.variants]
        elif isinstance(command, WrapCommand):
            children = [command.wrapper, command.inner]
        elif isinstance(command, VariableAssignmentCommand):
            children = [command.value]
        elif isinstance(command, VariableAccessCommand):
            children = [command.default] if command.default is not None else []
        else:
            children = []
        for child in children:
            self._walk(child, used)

    def _visit_wildcard(self, name: str, used: dict[str, str]) -> None:
        if name in used:
            return
        values = self._values(name)
        used[name] = hashlib.sha256("\n".join(values).encode("utf-8")).hexdigest()
        for value in values:
            self._walk(self._parse(value), used)

    def _values(self, name: str) -> list[str]:
        folder = self.wildcards_dir
        if not folder.is_dir():
            raise DynamicPromptError(
                f"the prompt uses the wildcard __{name}__, but the wildcards folder {folder} "
                "does not exist; create it or pass --wildcards DIR"
            )
        values = self._wildcard_manager().values_of(name)
        if not values:
            names = self._wildcard_manager().get_collection_names()
            match = difflib.get_close_matches(name, sorted(names), n=1)
            hint = f" (did you mean __{match[0]}__?)" if match else ""
            raise DynamicPromptError(
                f"unknown wildcard __{name}__: no {name}.txt with any line in {folder}{hint}"
            )
        return list(values.iterate_string_values_weighted())

    def _wildcard_manager(self):
        if self._manager is None:
            self._manager = _strict_manager(self.wildcards_dir)
        return self._manager


def _is_literal(command, text: str) -> bool:
    from dynamicprompts.commands import LiteralCommand

    return isinstance(command, LiteralCommand) and command.literal == text


def _strict_manager(folder: Path):
    """A ``WildcardManager`` of ``folder`` that raises for a wildcard with no values
    (dynamicprompts itself warns and leaves ``__name__`` in the prompt). Its other
    warning, that ``__name__`` was found as ``**/name`` in a subfolder, is not shown."""
    import logging

    from dynamicprompts.wildcards import WildcardManager

    logging.getLogger("dynamicprompts").setLevel(logging.ERROR)

    class StrictManager(WildcardManager):
        def values_of(self, wildcard):
            return super().get_values(wildcard)

        def get_values(self, wildcard):
            values = super().get_values(wildcard)
            if not values:
                raise DynamicPromptError(f"unknown wildcard __{wildcard}__ in {folder}")
            return values

    return StrictManager(folder)
