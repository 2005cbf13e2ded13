"""Progress on stderr: a live bar on a terminal, plain log lines elsewhere.

A ``Progress`` is a pipeline step callback. On a terminal it redraws one line with the
image (or the images denoised together), the steps, steps per second and the time left;
when stderr is a file or pipe (CI logs) it writes a plain line at most every
``interval`` seconds and when a batch's last step is done.

Images are numbered in the order this run starts them, from 1 to the number of images
the run makes, so a resumed run or one shard of many counts ``1/3 2/3 3/3`` like the
CLI's ``[k/n]`` lines, whatever the images' indices in the whole request.
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

    total_images: images this run makes; steps: denoising steps per image (the same for
    every image, or the largest: each image's own count replaces it once the image
    starts, so the time left reaches 00:00 at the last step); stream: where to write
    [stderr]; interactive: draw a live bar [whether ``stream`` is a terminal];
    interval: seconds between plain log lines [10].
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
        self.steps = steps
        self.total_units = total_images * steps
        self.interval = interval
        self.clock = clock
        self.done = 0
        self.started = None
        self.last_line = None
        self.numbers: dict[int, int] = {}  # an image's index in the request -> its number
        self.batch: list[int] = []  # numbers of the images being denoised together
        self.finished: set[int] = set()
        self.drawn = 0  # length of the live line on screen

    def __call__(self, image: int, step: int, steps: int, _latents=None) -> None:
        now = self.clock()
        if self.started is None:
            # the first step includes tracing the networks; rates count from there
            self.started = now
            self.last_line = now
        number = self._number(image, steps)
        self.done += 1
        if step + 1 == steps:
            self.finished.add(number)
        batch_done = self.finished.issuperset(self.batch)
        elapsed = now - self.started
        rate = (self.done - 1) / elapsed if elapsed > 0 and self.done > 1 else 0.0
        remaining = max(self.total_units - self.done, 0)
        if not remaining:
            eta = format_duration(0)
        else:
            eta = format_duration(remaining / rate) if rate else "--:--"
        label = self._label()
        if self.interactive:
            width = 24
            filled = width * (step + 1) // steps
            bar = "#" * filled + "-" * (width - filled)
            line = f"{label} |{bar}| {step + 1}/{steps} steps  {rate:.2f} it/s  ETA {eta}"
            # spaces wipe what a longer line drew before
            self.stream.write("\r" + line.ljust(self.drawn) + ("\n" if batch_done else ""))
            self.drawn = 0 if batch_done else len(line)
            self.stream.flush()
        elif batch_done or now - self.last_line >= self.interval:
            self.last_line = now
            self.stream.write(f"{label}: step {step + 1}/{steps}, {rate:.2f} it/s, ETA {eta}\n")
            self.stream.flush()

    def _number(self, image: int, steps: int) -> int:
        """The image's number in this run; an image seen for the first time joins the
        batch being denoised, or starts the next one, and brings its own step count."""
        if image in self.numbers:
            return self.numbers[image]
        number = self.numbers[image] = len(self.numbers) + 1
        self.total_units += steps - self.steps
        if self.finished.issuperset(self.batch):
            self.batch = []
        self.batch.append(number)
        return number

    def _label(self) -> str:
        first, last = self.batch[0], self.batch[-1]
        if first == last:
            return f"image {first}/{self.total_images}"
        return f"images {first}-{last}/{self.total_images}"
