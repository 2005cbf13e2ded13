"""Time planning and resuming a 10,000-line prompts file with the tiny model.

Writes a prompts file of plain prompts (random seeds, as most batch files are), reads it,
and times ``plan()`` twice: on an empty folder, and on a folder whose manifest already
lists every image (a resume with nothing to do). For the second, each image's PNG is
written cheaply: a 1x1 picture carrying the image's real infotext, with a manifest line
holding its sha256, which is all that resuming checks. It then times the resume's
``run()``, which only reports the finished images, and a contact sheet of the folder.
With ``--cli`` it also times the whole ``sdgen --prompts-file`` command on that folder
(Python and TensorFlow start-up, tokenizing every prompt, planning, the contact sheet).

    python benchmarks/batch_plan.py [--lines 10000] [--cli]

This is a benchmark, not a test: it prints figures; the target is under 10 s for each.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import ClassVar

import numpy as np

from sdgen.batch import identity
from sdgen.batch.plan import plan
from sdgen.batch.prompts_file import read_prompts_file
from sdgen.batch.run import Saved, run
from sdgen.batch.work import Job, OutputOptions
from sdgen.config import GenerationConfig
from sdgen.output.contact_sheet import ContactSheet
from sdgen.output.files import write_atomically
from sdgen.output.manifest import MANIFEST_NAME
from sdgen.output.png import png_bytes


class _NoExecutor:
    """A resume has nothing to make; an executor that is asked anyway fails loudly."""

    load_seconds: ClassVar[dict] = {}

    def run(self, work, callback=None):
        if work:
            raise AssertionError(f"a resume with nothing to do was asked to make {len(work)}")
        return iter(())


def _jobs(path: Path) -> list[Job]:
    """The jobs of a prompts file, as the CLI makes them with ``--model tiny``."""
    defaults = {"steps": 2, "width": 64, "height": 64}
    jobs = []
    for line in read_prompts_file(path):
        settings = {**defaults, **line.overrides}
        model = settings.pop("model", "tiny")
        jobs.append(Job(GenerationConfig(prompt=line.prompt, **settings), model, line.line_number))
    return jobs


def _timed(what: str, function):
    began = time.perf_counter()
    result = function()
    print(f"{what:48} {time.perf_counter() - began:7.2f} s")
    return result


def _finish(the_plan, output: OutputOptions) -> None:
    """Write every planned image as a 1x1 PNG with its infotext, and its manifest line."""
    pixel = np.zeros((1, 1, 3), np.uint8)
    lines = []
    created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    for image in the_plan.images:
        parameters = image.parameters()
        data = png_bytes(pixel, identity.infotext(parameters))
        image.path.write_bytes(data)
        record = {
            **parameters,
            "file": image.path.relative_to(output.folder).as_posix(),
            "sha256": hashlib.sha256(data).hexdigest(),
            "index": image.index,
            "line": image.job.line_number,
            "batch_size": 1,
            "seconds": 0.0,
            "load_seconds": 0.0,
            "created": created,
        }
        lines.append(json.dumps(record, sort_keys=True))
    write_atomically(output.folder / MANIFEST_NAME, ("\n".join(lines) + "\n").encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=10_000, help="prompts file lines")
    parser.add_argument("--cli", action="store_true", help="also time the sdgen command")
    arguments = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        prompts = folder / "prompts.txt"
        words = ["castle", "dusk", "cat", "lighthouse", "forest", "robot", "harbour"]
        prompts.write_text(
            "".join(
                f"a {words[n % 7]} and a {words[n * 3 % 7]} number {n}\n"
                for n in range(arguments.lines)
            ),
            "utf-8",
        )
        jobs = _timed(f"read {arguments.lines} lines", lambda: _jobs(prompts))
        output = OutputOptions(outdir=folder / "outputs")
        fresh = _timed("plan() on an empty folder", lambda: plan(jobs, output))
        assert len(fresh.todo) == arguments.lines
        _timed("(write 1x1 PNGs and the manifest)", lambda: _finish(fresh, output))
        resumed = _timed("plan() when every image is made", lambda: plan(jobs, output))
        assert not resumed.todo, f"{len(resumed.todo)} images were not recognised as made"
        assert [i.path for i in resumed.images] == [i.path for i in fresh.images]

        def resume():
            events = list(run(resumed, output, _NoExecutor()))
            assert all(isinstance(event, Saved) and event.skipped for event in events)

        _timed("run() of that plan (nothing to make)", resume)
        _timed("contact sheet of the folder", lambda: ContactSheet(output.folder).update())
        if arguments.cli:
            command = [sys.executable, "-m", "sdgen", "--prompts-file", str(prompts)]
            command += ["--model", "tiny", "--width", "64", "--height", "64", "--steps", "2"]

            def resume_command():
                done = subprocess.run(command, cwd=folder, capture_output=True, text=True)
                expected = f"done 0, skipped {arguments.lines}, failed 0"
                assert done.returncode == 0 and expected in done.stderr, done.stderr[-2000:]

            _timed("sdgen --prompts-file ... (nothing to make)", resume_command)


if __name__ == "__main__":
    main()
