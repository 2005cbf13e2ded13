"""What a person or a script sees: one-line messages, download and step progress and
TensorFlow's start-up chatter kept off the terminal (all on stderr), a failure as
``--json`` lists it, a Ctrl-C reported as one whatever TensorFlow made of it, and
``--help`` with its options under headings."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Mapping

import click


class SectionedCommand(click.Command):
    """A command whose ``--help`` lists its options under headings (click's own help
    sections): ``sections`` maps each heading to the parameter names it shows, in
    order ("help" names the help option); a parameter in none of them is listed under
    "Other options". Every heading's descriptions start in the same column."""

    def __init__(self, *args, sections: Mapping[str, tuple[str, ...]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.sections = dict(sections or {})

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        help_option = self.get_help_option(ctx)
        records = {}
        for param in self.get_params(ctx):
            record = None if isinstance(param, click.Argument) else param.get_help_record(ctx)
            if record is not None:
                records["help" if param is help_option else param.name] = record
        listed = {name for names in self.sections.values() for name in names}
        others = tuple(name for name in records if name not in listed)
        column = min(max(len(term) for term, _ in records.values()), _TERM_WIDTH)
        for heading, names in {**self.sections, "Other options": others}.items():
            rows = [records[name] for name in names if name in records]
            if rows:
                with formatter.section(heading):
                    formatter.write_dl(
                        [(term.ljust(column), text) for term, text in rows], col_max=_TERM_WIDTH
                    )


_TERM_WIDTH = 30  # click's: a longer option gets its description on the next line


def reporter(quiet: bool):
    def say(message: str) -> None:
        if not quiet:
            click.echo(message, err=True)

    return say


def failure_json(failure, the_plan) -> dict:
    """A failed line or image for ``--json``: its prompts-file line (None for a single
    prompt), the indices and paths of the images it cost (none for a line that never
    became a job) and the reason."""
    paths = {image.index: str(image.path) for image in the_plan.images}
    return {
        "line": failure.line_number,
        "indices": list(failure.indices),
        "paths": [paths[i] for i in failure.indices if i in paths],
        "count": failure.count,
        "reason": failure.message,
    }


@contextlib.contextmanager
def interrupts_noted():
    """A list that holds an entry once Ctrl-C was pressed. A KeyboardInterrupt raised
    while TensorFlow runs C code can come out as another error (``SystemError: ... bad
    argument to internal function``), which the executor reports as a failed image; with
    this the run still ends as interrupted. Python's own handler still raises; a SIGINT
    that is ignored (a background job) or handled by someone else is left alone."""
    noted: list[bool] = []
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield noted
        return

    def note(signum, frame):
        noted.append(True)
        signal.default_int_handler(signum, frame)

    signal.signal(signal.SIGINT, note)
    try:
        yield noted
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def download_progress():
    interactive = sys.stderr.isatty()
    last = {"reported": -1}

    def progress(name: str, done: int, total: int | None) -> None:
        if total:
            percent = done * 100 // total
            if interactive:
                click.echo(
                    f"\rdownloading {name}: {done / 1e6:,.0f}/{total / 1e6:,.0f} MB ({percent}%)",
                    err=True,
                    nl=done >= total,
                )
            elif percent // 10 != last["reported"]:
                last["reported"] = percent // 10
                click.echo(f"downloading {name}: {percent}%", err=True)

    return progress


def step_progress(quiet: bool, total: int, steps: int):
    if quiet:
        return None
    from ..batch.progress import Progress

    return Progress(total, steps, stream=sys.stderr)


@contextlib.contextmanager
def tensorflow_logs(debug: bool, runtime: str | None = None):
    """Keep TensorFlow's start-up chatter (absl and C++ logs written straight to file
    descriptor 2 before any log level applies) off the terminal unless ``--debug``.

    runtime: generate's runtime. Generating leaves the import to the first model load
    (``import_tensorflow``, quiet while ``$TF_CPP_MIN_LOG_LEVEL`` is 3), so a usage
    error or a rerun that only skips never waits for TensorFlow; with ``--debug`` it is
    imported now, with its logs. The OpenVINO runtime imports it only to convert a
    network (quietly too). Without a runtime (``sdgen import``) it is imported now."""
    if not debug:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if runtime is None or (debug and runtime == "tensorflow"):
        from ..runtimes.tensorflow import import_tensorflow

        import_tensorflow(quiet=not debug)
    yield
