"""The ``sdgen`` command: click only. Options -> a service request -> a report.

- ``app``: the command group, and ``main``: errors as one line and an exit status.
- ``generate``: ``sdgen generate`` (also ``sdgen PROMPT``), translated into a
  :class:`sdgen.service.GenerateRequest`.
- ``models``: ``sdgen import`` and ``sdgen models``.
- ``report``: what a person sees on stderr: progress, downloads, TensorFlow's chatter
  kept quiet.

TensorFlow is imported only when a command needs it, so ``sdgen --help`` answers at once.
"""

from .app import cli, main

__all__ = ["cli", "main"]
