"""Progress on stderr: a live bar on a terminal, plain log lines elsewhere.

A ``Progress`` is a pipeline step callback. On a terminal it redraws one line with the
image, the steps, steps per second and the time left; when stderr is a file or pipe (CI
logs) it writes a plain line at most every ``interval`` seconds and when an image's last
step is done.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_duration(seconds: float) -> str:
    seconds = round(seconds)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"


class Progress:
    """Counts image-steps over a whole run.

    total_images: images in the run; steps: denoising steps per image (the same for every
    image, or the largest); stream: where to write [stderr]; interactive: draw a live bar
    [whether ``stream`` is a terminal]; interval: seconds between plain log lines [10].
    """

    def __init__(
        self,
        total_images: int,
        steps: int,
        stream: TextIO | None = None,
        interactive: bool | None = None,
        interval: float = 10.0,
        clock=time.monotonic,
    ):
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.total_images = total_images
        self.total_units = total_images * steps
        self.interval = interval
        self.clock = clock
        self.done = 0
        self.started = None
        self.last_line = None
        self.images_seen = {}

    def __call__(self, image: int, step: int, steps: int, _latents=None) -> None:
        now = self.clock()
        if self.started is None:
            # the first step includes tracing the networks; rates count from there
            self.started = now
            self.last_line = now
        self.done += 1
        number = self.images_seen.setdefault(image, len(self.images_seen) + 1)
        elapsed = now - self.started
        rate = (self.done - 1) / elapsed if elapsed > 0 and self.done > 1 else 0.0
        remaining = max(self.total_units - self.done, 0)
        eta = format_duration(remaining / rate) if rate else "--:--"
        finished = step + 1 == steps
        if self.interactive:
            width = 24
            filled = width * (step + 1) // steps
            bar = "#" * filled + "-" * (width - filled)
            line = (
                f"\rimage {number}/{self.total_images} |{bar}| {step + 1}/{steps} steps"
                f"  {rate:.2f} it/s  ETA {eta}"
            )
            self.stream.write(line + ("\n" if finished else ""))
            self.stream.flush()
        elif finished or now - self.last_line >= self.interval:
            self.last_line = now
            self.stream.write(
                f"image {number}/{self.total_images}: step {step + 1}/{steps}, "
                f"{rate:.2f} it/s, ETA {eta}\n"
            )
            self.stream.flush()
