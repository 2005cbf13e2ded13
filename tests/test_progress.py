"""The progress reporter: a live bar on terminals, sparse plain lines elsewhere."""

from __future__ import annotations

import io

from sdgen.batch.progress import Progress, format_duration


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_plain_lines_at_the_interval_and_at_each_image_end():
    stream, clock = io.StringIO(), Clock()
    progress = Progress(2, 10, stream=stream, interactive=False, interval=5.0, clock=clock)
    for image in range(2):
        for step in range(10):
            clock.now += 1.0
            progress(image, step, 10)
    # a line every 5 s since the last one, and one at each image's last step
    assert stream.getvalue().splitlines() == [
        "image 1/2: step 6/10, 1.00 it/s, ETA 00:14",
        "image 1/2: step 10/10, 1.00 it/s, ETA 00:10",
        "image 2/2: step 5/10, 1.00 it/s, ETA 00:05",
        "image 2/2: step 10/10, 1.00 it/s, ETA 00:00",
    ]


def test_live_bar_redraws_one_line():
    stream, clock = io.StringIO(), Clock()
    progress = Progress(1, 4, stream=stream, interactive=True, clock=clock)
    for step in range(4):
        clock.now += 0.5
        progress(0, step, 4)
    text = stream.getvalue()
    assert text.count("\r") == 4 and text.endswith("\n")
    assert "image 1/1 |" in text and "4/4 steps" in text and "2.00 it/s" in text


def test_format_duration():
    assert format_duration(75) == "01:15"
    assert format_duration(3725) == "1:02:05"
