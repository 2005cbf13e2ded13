"""What a person sees on stderr: one-line messages, download and step progress, and
TensorFlow's start-up chatter kept off the terminal."""

from __future__ import annotations

import contextlib
import os
import sys

import click


def reporter(quiet: bool):
    def say(message: str) -> None:
        if not quiet:
            click.echo(message, err=True)

    return say


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
