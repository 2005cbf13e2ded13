"""Plan a batch: every image's seed, file name and status, before any model is loaded.

``plan()`` is cheap and needs no model. It finds the latest earlier run of the same
request in the folder's manifests (:mod:`sdgen.batch.resume`) and decides:

- seeds: a job without ``--seed`` takes the seed that run chose, so a killed or failed
  run resumes with the same images; once the request is finished (every image of this
  shard there), a rerun without ``--seed`` draws new seeds and makes new images, as
  AUTOMATIC1111 and every other tool do. With ``--seed``, a rerun of a finished request
  makes nothing.
- status: an image whose identity the manifest records, with its file there and
  intact, is skipped wherever that file is.
- names: in ``--outdir``, ``{index}`` is a folder-wide counter: a new image's number is
  its run index plus the run's base, the base of the run it resumes or else the
  folder's next free number, so other settings never land on an earlier file. Every
  shard of a run computes the same base from the same records (see
  ``EarlierRun.next_number``), and the numbers of shards never meet, since each takes
  its own run indices.

It refuses to touch files it did not make, before any weight is loaded.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ..catalog import get_model_spec
from ..config import MAX_SEED, GenerationConfig
from ..errors import ConfigError
from ..output.files import ensure_writable_folder, slugify
from ..spec import ModelSpec
from .naming import check_template, image_path
from .resume import EarlierRun, check_free
from .work import Failure, Job, OutputOptions, Plan, PlannedImage

#: The path of an image in ``--outdir`` until ``_numbered`` names it.
_UNNAMED = Path()


def plan(
    jobs: list[Job],
    output: OutputOptions,
    failures: list[Failure] | None = None,
    expand: Callable[[Job, int], Job] | None = None,
) -> Plan:
    """Seeds, sizes, names and status of every image of ``jobs``; see the module doc.

    ``failures`` (bad lines found earlier) are carried into the plan. ``expand(job,
    seed)``: the job of the image with ``seed``, for a job whose random template each
    image expands (``job.per_image``; such an image gets a job of its own). Raises
    ``ConfigError`` for a bad name template or shard, ``OutputError`` for an output
    folder that cannot be written, and ``OutputExistsError`` for an existing file that
    is not a finished sdgen image of the same parameters (unless ``overwrite``).
    """
    check_template(output.name_template)
    starts, total = [], 0  # (first run index, job) of each job
    specs: dict[str, ModelSpec] = {}  # looked up once per model
    for job in jobs:
        starts.append((total, _sized(job, specs)))
        total += job.config.num_images
    templated = output.out is None
    earlier = EarlierRun.read(output.folder, output.outdir if templated else None)
    run = earlier.find_run(starts)
    images = _images(starts, total, run.seeds if run else {}, earlier, output, expand)
    unseeded = any(job.config.seed is None for _, job in starts)
    if run is not None and unseeded and not output.force and all(i.done for i in images):
        run = None  # a finished request: new seeds, new images
        images = _images(starts, total, {}, earlier, output, expand)
    remade = {image.path for image in images if output.force and image.path != _UNNAMED}
    if templated:
        following = earlier.next_number(job for _, job in starts)
        fits = run is not None and (run.size >= total or run.base + run.size >= following)
        base = run.base if fits else following
        images = [_numbered(image, base, total, output) for image in images]
    paths = [image.path for image in images]
    if len(set(paths)) != len(paths):
        raise ConfigError(
            "two images of this run would get the same file name; see --name-template"
        )
    for folder in sorted({path.parent for path in paths}):
        ensure_writable_folder(folder)
    if not (output.force and output.out is not None):  # --force --out replaces its files
        images = [
            image if image.done or image.path in remade else check_free(image, output)
            for image in images
        ]
    grid_path, sweep_grids = None, []
    if any(image.job.sweep is not None for image in images):
        # a sweep's labelled grids take the place of --grid's; a shard sees only some cells
        if output.shard[1] == 1:
            from ..sweep.grids import plan_grids

            sweep_grids = plan_grids(images)
    elif output.grid and images:
        # sdgen's own output beside the first image, never in a rerun's way: run()
        # rewrites it when the run makes images and leaves it when all were skipped
        first = images[0].path
        grid_path = first.with_name(f"{first.stem}-grid.png")
    return Plan(list(images), list(failures or []), grid_path, total, sweep_grids)


def _sized(job: Job, specs: dict[str, ModelSpec]) -> Job:
    """``job`` with its width and height set where it sets none: its init image's
    (rounded to multiples of 64; see :mod:`.image_task`), else its model's default."""
    from .image_task import sized

    config = job.config
    if config.width is not None and config.height is not None:
        return job
    if job.model not in specs:
        specs[job.model] = get_model_spec(job.model)
    return replace(job, config=sized(config, specs[job.model]))


def _images(
    starts: list[tuple[int, Job]],
    total: int,
    seeds: dict[int, int],
    earlier: EarlierRun,
    output: OutputOptions,
    expand: Callable[[Job, int], Job] | None = None,
) -> list[PlannedImage]:
    """This shard's images of the jobs, their seeds chosen (``seeds`` by a job's first
    run index, else the job's own or a random one) and each marked ``done`` where an
    earlier run finished it (with ``--force``: to be made again at the same file). With
    ``--out`` each has its path; in ``--outdir`` only those of an earlier run do
    (``_numbered`` names the others). A job of a random template gives each image a
    job of its own, its prompts expanded with the image's seed (``expand``)."""
    shard, shards = output.shard
    images = []
    # the cells of a sweep share one seed: the one an earlier run chose, else one drawn
    sweep_seeds = {
        job.sweep.sweep_id: seeds[start] for start, job in starts if _swept(job, seeds, start)
    }
    for start, job in starts:
        config = job.config
        if config.seed is None:
            seed = seeds.get(start)
            if seed is None and job.sweep is not None:
                seed = sweep_seeds.setdefault(job.sweep.sweep_id, _random_seed(config))
            job = replace(
                job, config=replace(config, seed=_random_seed(config) if seed is None else seed)
            )
        for k in range(config.num_images):
            index = start + k
            if index % shards != shard - 1:
                continue
            image_job = job
            if job.per_image:
                if expand is None:
                    raise ValueError("a job of a random template needs plan(expand=...)")
                image_job = expand(job, job.config.seed + k)
            path = (
                _UNNAMED if output.out is None else image_path(output, index, total, image_job, k)
            )
            image = PlannedImage(index, k, image_job, path)
            finished = earlier.finished(image, output)
            if finished is not None and output.force:  # made again, at the same file
                finished = replace(finished, done=False, sha256=None)
            images.append(finished or image)
    return images


def _swept(job: Job, seeds: dict[int, int], start: int) -> bool:
    """Whether ``job`` is an unseeded sweep cell whose seed an earlier run chose."""
    return job.sweep is not None and job.config.seed is None and start in seeds


def _numbered(image: PlannedImage, base: int, total: int, output: OutputOptions) -> PlannedImage:
    """An image to make in ``--outdir``, named with its number ``base + index``."""
    if image.path != _UNNAMED:
        return image  # an earlier run's file: skipped, or remade with --force
    number = base + image.index
    slug = slugify(image.job.config.prompt)
    path = image_path(output, image.index, total, image.job, image.k, slug, number)
    return replace(image, path=path, number=number)


def _random_seed(config: GenerationConfig) -> int:
    return secrets.randbelow(MAX_SEED - config.num_images + 2)
