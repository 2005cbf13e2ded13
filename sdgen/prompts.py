"""Reading prompts files: UTF-8, one prompt per line, blank lines and ``#`` comments skipped."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import PromptsFileError


@dataclass(frozen=True)
class PromptLine:
    """One prompt and the 1-based line number it came from."""

    line_number: int
    prompt: str


def read_prompts_file(path: str | Path) -> list[PromptLine]:
    """The prompts of ``path``. A UTF-8 byte-order mark and CRLF line endings are accepted.

    Raises ``PromptsFileError`` if the file is missing, unreadable, not UTF-8, or holds
    no prompt at all.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as error:
        raise PromptsFileError(f"prompts file {path} does not exist") from error
    except IsADirectoryError as error:
        raise PromptsFileError(f"prompts file {path} is a folder, not a file") from error
    except OSError as error:
        raise PromptsFileError(
            f"cannot read prompts file {path}: {error.strerror or error}"
        ) from error
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise PromptsFileError(
            f"prompts file {path} is not UTF-8 (bad byte at line {line}); save it as UTF-8"
        ) from error
    prompts = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            prompts.append(PromptLine(number, stripped))
    if not prompts:
        what = "is empty" if not text.strip() else "has only comments and blank lines"
        raise PromptsFileError(f"prompts file {path} {what}; write one prompt per line")
    return prompts
