"""Options that several commands share, declared once."""

from __future__ import annotations

from pathlib import Path

import click

from ..text.prompt_syntax import DEFAULT_EMPHASIS, EMPHASIS_MODES


def emphasis_option(help_text: str | None = None):
    """``--emphasis MODE``: how ``(word:1.2)`` weights apply."""
    return click.option(
        "--emphasis",
        default=DEFAULT_EMPHASIS,
        show_default=True,
        help=help_text
        or f"How (word:1.2) weights apply: {', '.join(EMPHASIS_MODES)} (A1111's labels work too).",
    )


def embeddings_option(help_text: str):
    """``--embeddings DIR`` (the parameter ``embeddings_dir``): the textual-inversion
    folder [``$SDGEN_HOME/embeddings``]."""
    return click.option(
        "--embeddings",
        "embeddings_dir",
        type=click.Path(path_type=Path, file_okay=False),
        default=None,
        help=help_text,
    )
