"""Plan and run a batch: seeds, output names, resuming, failure isolation, the manifest.

``plan()`` is cheap and needs no model: it fixes every image's seed and file name, works
out which images an earlier run already made (same file, same parameters: they are
skipped), and refuses to touch files it did not make, before any weight is loaded.
``run()`` then generates what is left through an executor (in this process, or on Ray),
saves each image as soon as it is decoded, and carries on past a failed image.
"""

from __future__ import annotations

import datetime
import secrets
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import __version__
from .catalog import get_model_spec
from .config import MAX_SEED, GenerationConfig
from .errors import ConfigError, OutputExistsError, SdgenError
from .output import (
    append_manifest,
    ensure_writable_folder,
    format_infotext,
    grid_image,
    parse_infotext,
    png_bytes,
    read_infotext,
    read_manifest,
    save_png,
    slugify,
    write_atomically,
)
from .samplers import get_sampler
from .weights import sha256_of

#: How files are named when ``--out`` is not given.
NAME_TEMPLATE = "{index:05d}-{seed}-{slug}.png"
#: The fields a name template may use.
TEMPLATE_FIELDS = (
    "index",
    "seed",
    "slug",
    "line",
    "k",
    "model",
    "sampler",
    "steps",
    "width",
    "height",
)
#: Exit status of a run that finished but could not make every image.
EXIT_SOME_FAILED = 3


@dataclass(frozen=True)
class Job:
    """One prompt's worth of work: a config (its seed may be unset) and a model name."""

    config: GenerationConfig
    model: str
    line_number: int | None = None


@dataclass(frozen=True)
class OutputOptions:
    """Where images go and what happens to existing ones.

    out: one file for a single image; with several, ``NAME-0.png``, ``NAME-1.png``, ...
    outdir: the folder for templated names when ``out`` is not given [outputs].
    name_template: ``str.format`` template for names in ``outdir`` [NAME_TEMPLATE].
    overwrite: replace existing files that were made with other settings [False].
    force: regenerate every image, even those an earlier run finished [False].
    grid: also save one image showing all images of the run [False].
    shard: (K, N): make only the images whose index is K-1 modulo N [(1, 1)].
    """

    outdir: Path = Path("outputs")
    out: Path | None = None
    name_template: str = NAME_TEMPLATE
    overwrite: bool = False
    force: bool = False
    grid: bool = False
    shard: tuple[int, int] = (1, 1)


@dataclass(frozen=True)
class PlannedImage:
    """Image ``k`` of ``job`` (whose config has its seed set), number ``index`` of the
    run. ``done``: an earlier run made it with the same parameters; ``recover``: its PNG
    is finished but its manifest line was lost (a kill between the two)."""

    index: int
    k: int
    job: Job
    path: Path
    done: bool = False
    recover: bool = False

    @property
    def seed(self) -> int:
        return self.job.config.seed + self.k

    def parameters(self) -> dict:
        config = self.job.config
        sampler = get_sampler(config.sampler)
        return {
            "prompt": config.prompt,
            "negative_prompt": config.negative_prompt,
            "steps": config.steps,
            "sampler": sampler.name,
            "sampler_label": sampler.label,
            "guidance_scale": config.guidance_scale,
            "seed": self.seed,
            "width": config.width,
            "height": config.height,
            "model": self.job.model,
            "version": __version__,
        }


@dataclass(frozen=True)
class Failure:
    """A line or an image that could not be made, and why."""

    message: str
    line_number: int | None = None
    indices: tuple[int, ...] = ()

    @property
    def count(self) -> int:
        """How many images this failure costs (a bad line counts as one)."""
        return max(1, len(self.indices))

    def __str__(self) -> str:
        where = []
        if self.line_number is not None:
            where.append(f"line {self.line_number}")
        if self.indices:
            noun = "image" if len(self.indices) == 1 else "images"
            where.append(f"{noun} {', '.join(str(i) for i in self.indices)}")
        return f"{', '.join(where)}: {self.message}" if where else self.message


@dataclass
class Plan:
    images: list[PlannedImage]
    failures: list[Failure] = field(default_factory=list)
    grid_path: Path | None = None

    @property
    def todo(self) -> list[PlannedImage]:
        return [image for image in self.images if not image.done]


@dataclass(frozen=True)
class JobFailure:
    """What an executor yields for images ``ks`` of a job that could not be made."""

    ks: list[int]
    message: str


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


# -- planning -----------------------------------------------------------------------------

_IDENTITY = (
    "prompt",
    "negative_prompt",
    "steps",
    "sampler",
    "guidance_scale",
    "width",
    "height",
    "model",
)


def plan(jobs: list[Job], output: OutputOptions, failures: list[Failure] | None = None) -> Plan:
    """Seeds, sizes, names and status of every image of ``jobs``; see the module doc.

    Raises ``ConfigError`` for a bad name template or shard, ``OutputError`` for an
    output folder that cannot be written, and ``OutputExistsError`` for an existing file
    that is not a finished sdgen image of the same parameters (unless ``overwrite``).
    """
    _check_template(output.name_template)
    shard, shards = output.shard
    total = sum(job.config.num_images for job in jobs)
    records = _latest_records(_output_folder(output))
    images, failures, index = [], list(failures or []), 0
    for job in jobs:
        spec = get_model_spec(job.model)
        config = replace(
            job.config,
            width=job.config.width or spec.default_size,
            height=job.config.height or spec.default_size,
        )
        job = replace(job, config=config)
        if config.seed is None:
            seed = _earlier_seed(records, job, index) or _random_seed(config)
            job = replace(job, config=replace(config, seed=seed))
        for k in range(config.num_images):
            image = PlannedImage(index, k, job, _image_path(output, index, total, job, k))
            if index % shards == shard - 1:
                images.append(image)
            index += 1
    paths = [image.path for image in images]
    if len(set(paths)) != len(paths):
        raise ConfigError(
            "two images of this run would get the same file name; see --name-template"
        )
    for folder in sorted({path.parent for path in paths}):
        ensure_writable_folder(folder)
    images = [_status(image, records, output) for image in images]
    grid_path = None
    if output.grid and images:
        first = images[0].path
        grid_path = first.with_name(f"{first.stem}-grid{first.suffix}")
        if grid_path.exists() and not (output.overwrite or output.force):
            raise OutputExistsError(f"{grid_path} already exists; pass --overwrite to replace it")
    return Plan(images, failures, grid_path)


def _check_template(template: str) -> None:
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as error:
        raise ConfigError(f"bad --name-template {template!r}: {error}") from error
    unknown = sorted({name for name in fields if name not in TEMPLATE_FIELDS})
    if unknown:
        raise ConfigError(
            f"unknown field(s) {', '.join(unknown)} in --name-template; "
            f"use {', '.join(TEMPLATE_FIELDS)}"
        )
    if "index" not in fields and "seed" not in fields:
        raise ConfigError("--name-template needs {index} or {seed}, or names would collide")


def _image_path(output: OutputOptions, index: int, total: int, job: Job, k: int) -> Path:
    config = job.config
    if output.out is not None:
        out = output.out
        if out.suffix.lower() != ".png":
            raise ConfigError(f"--out {out} must end in .png")
        return out if total == 1 else out.with_name(f"{out.stem}-{index}{out.suffix}")
    name = output.name_template.format(
        index=index,
        seed=config.seed + k,
        slug=slugify(config.prompt),
        line=job.line_number or 0,
        k=k,
        model=slugify(job.model),
        sampler=get_sampler(config.sampler).name,
        steps=config.steps,
        width=config.width,
        height=config.height,
    )
    if not name.lower().endswith(".png"):
        name += ".png"
    path = output.outdir / name
    # a template may make subfolders, never leave the output folder
    if ".." in Path(name).parts or Path(name).is_absolute():
        raise ConfigError(f"--name-template makes {name!r}, which leaves --outdir")
    return path


def _latest_records(folder: Path) -> dict[str, dict]:
    return {record.get("file"): record for record in read_manifest(folder)}


def _earlier_seed(records: dict[str, dict], job: Job, first_index: int) -> int | None:
    """The seed an earlier run chose for this job, so a resumed run without --seed makes
    the same images instead of new ones."""
    wanted = {key: getattr(job.config, key, None) for key in _IDENTITY}
    wanted["sampler"] = get_sampler(job.config.sampler).name
    wanted["model"] = job.model
    for record in records.values():
        k = record.get("index", -1) - first_index
        if 0 <= k < job.config.num_images and all(
            record.get(key) == wanted[key] for key in _IDENTITY
        ):
            return record["seed"] - k
    return None


def _random_seed(config: GenerationConfig) -> int:
    return secrets.randbelow(MAX_SEED - config.num_images + 2)


def _status(image: PlannedImage, records: dict[str, dict], output: OutputOptions) -> PlannedImage:
    path = image.path
    if output.force or not path.exists():
        return image
    parameters = image.parameters()
    record = records.get(path.relative_to(_output_folder(output)).as_posix())
    same = record is not None and all(
        record.get(key) == parameters[key] for key in (*_IDENTITY, "seed")
    )
    if same and record.get("sha256") == sha256_of(path):
        return replace(image, done=True)
    if not same and _infotext_matches(path, parameters):
        return replace(image, done=True, recover=True)
    if output.overwrite:
        return image
    raise OutputExistsError(
        f"{path} already exists and was not made by sdgen with these settings; "
        "pass --overwrite to replace it"
    )


def _infotext_matches(path: Path, parameters: dict) -> bool:
    try:
        found = parse_infotext(read_infotext(path) or "")
    except (OSError, SyntaxError, ValueError):
        return False
    expected = parse_infotext(format_infotext(parameters))
    found.pop("Version", None)
    expected.pop("Version", None)
    return found == expected


def _output_folder(output: OutputOptions) -> Path:
    """The folder that holds the manifest: where --out points, or --outdir."""
    return output.out.parent if output.out is not None else output.outdir


# -- running ------------------------------------------------------------------------------


def run(
    the_plan: Plan,
    output: OutputOptions,
    executor,
    callback: Callable | None = None,
    on_saved: Callable[[Path], None] | None = None,
) -> Iterator[Saved | Failed]:
    """Make every image ``the_plan`` still lacks with ``executor`` and save each as it is
    finished: PNG with infotext, then its manifest line. Yields a ``Saved`` or ``Failed``
    event per image, in the order they finish; a failed image never stops the others.

    ``executor.run(work, on_step)`` takes ``(job, image numbers)`` pairs and yields
    ``(job, GeneratedImage)`` or ``(job, JobFailure)`` as images finish, calling
    ``on_step(job, k, step, steps, latents)`` after each denoising step if it can;
    ``executor.load_seconds`` maps model names to load times. ``callback(index, step,
    steps, latents)`` hears those steps with ``index``, the image's number in the run.
    Decoded pixels are kept until the run ends only when a grid needs them.
    ``on_saved(folder)`` is called with the output folder after each image (the CLI
    refreshes the contact sheet).
    """
    for failure in the_plan.failures:
        yield Failed(failure)
    for image in the_plan.images:
        if image.done:
            record = _record(image, sha256_of(image.path), executor, None, output)
            if image.recover:
                append_manifest(_output_folder(output), record)
            yield Saved(image, record, skipped=True)
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
            infotext = format_infotext(target.parameters())
            sha256 = save_png(target.path, result.pixels, infotext, overwrite)
            record = _record(target, sha256, executor, result.seconds, output)
            append_manifest(_output_folder(output), record)
        except SdgenError as error:
            yield Failed(Failure(str(error), job.line_number, (target.index,)))
            continue
        if the_plan.grid_path is not None:
            made[target.index] = result.pixels
        del result  # no finished image stays in memory unless the grid needs it
        if on_saved is not None:
            on_saved(_output_folder(output))
        yield Saved(target, record)
    if the_plan.grid_path is not None:
        # in the run's order, whichever images this run made and which an earlier one did
        pixels = [
            made[image.index] if image.index in made else _read_pixels(image.path)
            for image in the_plan.images
            if image.index in made or image.done
        ]
        if pixels:
            data = png_bytes(grid_image(pixels), "sdgen grid")
            write_atomically(the_plan.grid_path, data, overwrite=True)


def _read_pixels(path: Path):
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _record(image: PlannedImage, sha256: str, executor, seconds, output) -> dict:
    folder = _output_folder(output)
    record = {
        **image.parameters(),
        "file": image.path.relative_to(folder).as_posix(),
        "sha256": sha256,
        "index": image.index,
        "line": image.job.line_number,
        "batch_size": image.job.config.batch_size,
        "seconds": None if seconds is None else round(seconds, 3),
        "load_seconds": round(executor.load_seconds.get(image.job.model, 0.0), 3),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    return record


__all__ = [
    "EXIT_SOME_FAILED",
    "Failed",
    "Failure",
    "Job",
    "OutputOptions",
    "Plan",
    "Saved",
    "plan",
    "run",
]
