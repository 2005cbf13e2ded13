"""Run a plan: generate what is left, save each image as it is decoded, carry on past a
failed one, and write the grid at the end."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import SdgenError
from ..output.files import remove_temporaries
from ..output.grid import grid_image
from ..output.manifest import append_manifest
from ..output.png import save_png
from . import identity
from .work import Failure, JobFailure, OutputOptions, Plan, PlannedImage


@dataclass(frozen=True)
class Saved:
    """An event of ``run()``: an image written (or found finished, ``skipped``)."""

    image: PlannedImage
    record: dict
    skipped: bool = False


@dataclass(frozen=True)
class Failed:
    """An event of ``run()``: an image that could not be made."""

    failure: Failure


def run(
    the_plan: Plan,
    output: OutputOptions,
    executor,
    callback: Callable | None = None,
    on_saved: Callable[[Path], None] | None = None,
) -> Iterator[Saved | Failed]:
    """Make every image ``the_plan`` still lacks with ``executor`` and save each as it is
    finished: PNG with infotext, then its line in this shard's manifest. Yields a
    ``Saved`` or ``Failed`` event per image, in the order they finish; a failed image
    never stops the others.

    ``executor.run(work, on_step)`` takes ``(job, image numbers)`` pairs and yields
    ``(job, GeneratedImage)`` or ``(job, JobFailure)`` as images finish, calling
    ``on_step(job, k, step, steps, latents)`` after each denoising step if it can;
    ``executor.load_seconds`` maps model names to load times. ``callback(index, step,
    steps, latents)`` hears those steps with ``index``, the image's number in the run.
    Decoded pixels are kept until the run ends only when a grid needs them.
    ``on_saved(folder)`` is called with the output folder after each image (the CLI
    refreshes the contact sheet).
    """
    folder = output.folder
    for failure in the_plan.failures:
        yield Failed(failure)
    yield from _already_made(the_plan, output, executor)
    _remove_stale_temporaries(the_plan.todo)
    by_job: dict[int, list[PlannedImage]] = {}
    for image in the_plan.todo:
        by_job.setdefault(id(image.job), []).append(image)
    # one model after the other, so each is loaded once
    models = list(dict.fromkeys(image.job.model for image in the_plan.images))
    work = sorted(by_job.values(), key=lambda images: models.index(images[0].job.model))
    targets = {id(images[0].job): {image.k: image for image in images} for images in work}
    made = {}  # the pixels of images made by this run, for the grid
    overwrite = output.overwrite or output.force

    def on_step(job, k, step, steps, latents):  # a job's own k -> the run's image number
        callback(targets[id(job)][k].index, step, steps, latents)

    for job, result in executor.run(
        [(images[0].job, [i.k for i in images]) for images in work],
        None if callback is None else on_step,
    ):
        by_k = targets[id(job)]
        if isinstance(result, JobFailure):
            indices = tuple(by_k[k].index for k in result.ks)
            yield Failed(Failure(result.message, job.line_number, indices))
            continue
        target = by_k[result.index]
        try:
            target.path.parent.mkdir(parents=True, exist_ok=True)
            infotext = identity.infotext(target.parameters())
            sha256 = save_png(target.path, result.pixels, infotext, overwrite)
            record = _record(target, sha256, executor, result.seconds, output, the_plan.run_images)
            append_manifest(folder, record, output.shard)
        except SdgenError as error:
            yield Failed(Failure(str(error), job.line_number, (target.index,)))
            continue
        if the_plan.grid_path is not None or the_plan.sweep_grids:
            made[target.index] = result.pixels
        del result  # no finished image stays in memory unless the grid needs it
        if on_saved is not None:
            on_saved(folder)
        yield Saved(target, record)
    # the grid is rewritten when this run made images, or when it is missing; a rerun
    # that only skips leaves it as it is
    grid = the_plan.grid_path
    if grid is not None and (made or not grid.exists()):
        _write_grid(the_plan, made)
    _write_sweep_grids(the_plan, made)


def _write_grid(the_plan: Plan, made: dict) -> None:
    """The grid of the run, in the run's order: whichever images this run made (their
    pixels in ``made``) and those an earlier one did (read back). It carries the infotext
    of its first image, as A1111's grids do, and takes the format of its suffix."""
    shown = [image for image in the_plan.images if image.index in made or image.done]
    if shown:
        pixels = [made[i.index] if i.index in made else _read_pixels(i.path) for i in shown]
        infotext = identity.infotext(shown[0].parameters())
        save_png(the_plan.grid_path, grid_image(pixels), infotext, overwrite=True)


def _write_sweep_grids(the_plan: Plan, made: dict) -> None:
    """Each sweep grid whose cells this run made, or that is missing: its cells in
    index order, read back where an earlier run made them, grey where none did."""
    if not the_plan.sweep_grids:
        return
    from ..sweep.grids import grid_picture

    by_index = {image.index: image for image in the_plan.images}

    def pixels(index: int):
        if index in made:
            return made[index]
        image = by_index.get(index)
        return _read_pixels(image.path) if image is not None and image.done else None

    for grid in the_plan.sweep_grids:
        indices = grid.indices
        if not (indices & made.keys()) and grid.path.exists():
            continue
        shown = [by_index[i] for i in sorted(indices) if i in made or by_index[i].done]
        if shown:
            infotext = identity.infotext(shown[0].parameters())
            save_png(grid.path, grid_picture(grid, pixels), infotext, overwrite=True)


def _already_made(the_plan: Plan, output: OutputOptions, executor) -> Iterator[Saved]:
    """A skipped ``Saved`` for each image an earlier run made, writing the manifest line
    of any whose line a kill lost."""
    for image in the_plan.images:
        if image.done:
            record = _record(image, image.sha256, executor, None, output, the_plan.run_images)
            if image.recover:
                append_manifest(output.folder, record, output.shard)
            yield Saved(image, record, skipped=True)


def _remove_stale_temporaries(images: list[PlannedImage]) -> None:
    """Delete what a killed run left half-written at these images' names: each image
    is made by one shard only, so no live process is writing them."""
    by_folder: dict[Path, set[str]] = {}
    for image in images:
        by_folder.setdefault(image.path.parent, set()).add(image.path.name)
    for folder, names in by_folder.items():
        remove_temporaries(folder, names)


def _read_pixels(path: Path):
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _record(image: PlannedImage, sha256: str, executor, seconds, output, run_images: int) -> dict:
    """The manifest line of ``image``: its parameters, file and hash, its run index and
    folder number (with the run's image count, which keeps the run's block of numbers
    reserved), and how long it took."""
    return {
        **image.parameters(),
        "file": image.path.relative_to(output.folder).as_posix(),
        "sha256": sha256,
        "index": image.index,
        "number": image.number,
        "run_images": run_images,
        "line": image.job.line_number,
        "batch_size": image.job.config.batch_size,
        "seconds": None if seconds is None else round(seconds, 3),
        "load_seconds": round(executor.load_seconds.get(image.job.model, 0.0), 3),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
